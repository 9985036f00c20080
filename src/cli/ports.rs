//! Published ports with Docker's syntax and output: `crius run -p` read into CRI
//! `PortMapping`s, `crius port`, and the PORTS column of `crius ps`.
//!
//! What is in effect is read back from the pod's verbose PodSandboxStatus
//! (`info.portMappings`, the host ports the daemon relays), not from what the CLI once
//! asked for, so kubelet's pods show theirs too. A pod keeps its host ports for as long
//! as it exists: a container stopped and started again by `crius start` keeps them.
//!
//! A `-p` without a host port gets a free one picked here, by binding port 0 on the node,
//! as Docker's daemon picks one: the CRI cannot ask for "any port" (its host port 0 means
//! no host port at all), and the CLI runs on the node, beside the daemon's unix socket.
//! The port is free when picked; a program that takes it before the pod listens makes
//! RunPodSandbox fail naming it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use super::containers::{pod_status, verbose_info};
use super::{resolve, CliError};
use crate::cri::api::{PortMapping, Protocol};
use crate::cri::client::CriClient;

/// The protocols the daemon relays host ports for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    Tcp,
    Udp,
}

impl PortProtocol {
    fn cri(self) -> Protocol {
        match self {
            PortProtocol::Tcp => Protocol::Tcp,
            PortProtocol::Udp => Protocol::Udp,
        }
    }
}

impl std::fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        })
    }
}

/// `-p [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`: a container port published on the
/// node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    /// The node address listened on; `None`: all of them.
    pub host_ip: Option<IpAddr>,
    /// `None`: a free port, picked when the container is run.
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: PortProtocol,
}

/// `crius port CTR PORT[/PROTO]`: the container port asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrivatePort {
    pub port: u16,
    pub protocol: PortProtocol,
}

impl std::fmt::Display for PrivatePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol)
    }
}

/// A host port in effect, as the pod's verbose status reports it. Ordered by container
/// port first, the order `crius port` lists them in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HostPort {
    container_port: u16,
    protocol: PortProtocol,
    host_ip: IpAddr,
    host_port: u16,
}

impl HostPort {
    /// Where the node listens: `0.0.0.0:8080`, `[::1]:8080`.
    fn host_address(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip, self.host_port)
    }
}

/// The IP and host ports of a pod.
pub(super) struct PodNetwork {
    pub ip: String,
    pub ports: Vec<HostPort>,
}

/// `-p`, as `docker run -p` reads it: `80`, `8080:80`, `127.0.0.1:8080:80`,
/// `127.0.0.1::80`, `[::1]:8080:80`, each with an optional `/tcp` or `/udp`. Port ranges
/// are refused (one `-p` per port).
pub fn parse_publish(text: &str) -> Result<PublishedPort, CliError> {
    let invalid = |why: String| CliError::Usage(format!("port {text:?}: {why}"));
    let (spec, protocol) = split_protocol(text).map_err(invalid)?;
    // An IPv6 address is bracketed, as in a URL, since it has colons of its own.
    let (host_ip, ports): (Option<&str>, Vec<&str>) = match spec.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, ports) = bracketed.split_once("]:").ok_or_else(|| {
                invalid("use [IPV6]:[HOST_PORT]:CONTAINER_PORT for an IPv6 address".to_string())
            })?;
            (Some(ip), ports.split(':').collect())
        }
        None => {
            let mut parts: Vec<&str> = spec.split(':').collect();
            let ip = (parts.len() == 3).then(|| parts.remove(0));
            (ip, parts)
        }
    };
    let (host_port, container_port) = match ports.as_slice() {
        [container] if host_ip.is_none() => ("", *container),
        [host, container] => (*host, *container),
        _ => {
            return Err(invalid(
                "use [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]".to_string(),
            ))
        }
    };
    let host_ip = match host_ip.filter(|ip| !ip.is_empty()) {
        None => None,
        Some(ip) => Some(
            ip.parse::<IpAddr>()
                .map_err(|_| invalid(format!("host IP {ip:?} is not an IP address")))?,
        ),
    };
    let host_port = match host_port {
        // Left out: Docker's "pick a free one".
        "" => None,
        port => Some(port_number("host port", port).map_err(invalid)?),
    };
    Ok(PublishedPort {
        host_ip,
        host_port,
        container_port: port_number("container port", container_port).map_err(invalid)?,
        protocol,
    })
}

/// `PORT[/PROTO]` of `crius port`; TCP unless said otherwise.
pub fn parse_private_port(text: &str) -> Result<PrivatePort, CliError> {
    let invalid = |why: String| CliError::Usage(format!("port {text:?}: {why}"));
    let (port, protocol) = split_protocol(text).map_err(invalid)?;
    Ok(PrivatePort {
        port: port_number("port", port).map_err(invalid)?,
        protocol,
    })
}

/// `SPEC[/PROTO]` into the spec and the protocol (TCP when none is given).
fn split_protocol(text: &str) -> Result<(&str, PortProtocol), String> {
    let Some((spec, protocol)) = text.rsplit_once('/') else {
        return Ok((text, PortProtocol::Tcp));
    };
    match protocol.to_ascii_lowercase().as_str() {
        "tcp" => Ok((spec, PortProtocol::Tcp)),
        "udp" => Ok((spec, PortProtocol::Udp)),
        "sctp" => Err("SCTP host ports are not supported: use tcp or udp".to_string()),
        _ => Err(format!("unknown protocol {protocol:?}: use tcp or udp")),
    }
}

/// A port number, 1 to 65535; `what` names it in the error.
fn port_number(what: &str, text: &str) -> Result<u16, String> {
    if text.contains('-') {
        return Err(format!(
            "{what} {text:?}: port ranges are not supported, give one -p per port"
        ));
    }
    text.parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| format!("{what} {text:?} is not a port number (1-65535)"))
}

/// The CRI mappings of `published`, with a free host port picked for each that names
/// none. The probe sockets stay open until every port is picked, so that two picks can
/// never be the same port.
pub(super) fn port_mappings(published: &[PublishedPort]) -> Result<Vec<PortMapping>, CliError> {
    let mut probes: Vec<OwnedFd> = Vec::new();
    let mut mappings = Vec::new();
    for port in published {
        let host_port = match port.host_port {
            Some(host_port) => host_port,
            None => {
                let (probe, host_port) = free_port(port)?;
                probes.push(probe);
                host_port
            }
        };
        mappings.push(PortMapping {
            protocol: port.protocol.cri() as i32,
            container_port: i32::from(port.container_port),
            host_port: i32::from(host_port),
            host_ip: port.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        });
    }
    Ok(mappings)
}

/// A port of `port`'s protocol that is free on its host IP now, with the socket holding
/// it.
fn free_port(port: &PublishedPort) -> Result<(OwnedFd, u16), CliError> {
    let ip = port.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let address = SocketAddr::new(ip, 0);
    let bound = match port.protocol {
        PortProtocol::Tcp => TcpListener::bind(address)
            .and_then(|socket| Ok((socket.local_addr()?.port(), OwnedFd::from(socket)))),
        PortProtocol::Udp => UdpSocket::bind(address)
            .and_then(|socket| Ok((socket.local_addr()?.port(), OwnedFd::from(socket)))),
    };
    let (host_port, socket) = bound.map_err(|source| CliError::FreePort {
        protocol: port.protocol,
        ip,
        source,
    })?;
    Ok((socket, host_port))
}

/// The IP and host ports of pod `pod_id`, from its verbose PodSandboxStatus.
pub(super) async fn pod_network(
    client: &mut CriClient,
    pod_id: &str,
) -> Result<PodNetwork, CliError> {
    let (status, info) = pod_status(client, pod_id, true).await?;
    let ports =
        serde_json::from_value(verbose_info(&info)["portMappings"].clone()).map_err(|err| {
            CliError::Protocol {
                rpc: "PodSandboxStatus",
                detail: format!("info.portMappings: {err}"),
            }
        })?;
    Ok(PodNetwork {
        ip: status.network.map(|network| network.ip).unwrap_or_default(),
        ports,
    })
}

/// `crius port CTR [PORT[/PROTO]]`: every host port of the container's pod, as
/// `80/tcp -> 0.0.0.0:8080`; with `private`, only the host addresses of that port, and an
/// error when it has none (as `docker port` answers).
pub async fn port(
    address: &str,
    key: &str,
    private: Option<PrivatePort>,
) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    let container = resolve::container(&mut client, key).await?;
    let mut ports = pod_network(&mut client, &container.pod_sandbox_id)
        .await?
        .ports;
    ports.sort();
    let Some(private) = private else {
        return Ok(ports
            .iter()
            .map(|port| {
                format!(
                    "{}/{} -> {}\n",
                    port.container_port,
                    port.protocol,
                    port.host_address()
                )
            })
            .collect());
    };
    let addresses: String = ports
        .iter()
        .filter(|port| port.container_port == private.port && port.protocol == private.protocol)
        .map(|port| format!("{}\n", port.host_address()))
        .collect();
    if addresses.is_empty() {
        return Err(CliError::NoPublicPort {
            port: private.to_string(),
            container: key.to_string(),
        });
    }
    Ok(addresses)
}

/// Docker's PORTS column: `0.0.0.0:8080->80/tcp, 127.0.0.1:5353->53/udp`.
pub(super) fn ports_text(ports: &[HostPort]) -> String {
    let mut ports = ports.to_vec();
    ports.sort();
    ports
        .iter()
        .map(|port| {
            format!(
                "{}->{}/{}",
                port.host_address(),
                port.container_port,
                port.protocol
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The PORTS cell of each pod, fetched once per pod: `crius ps` lists containers, and
/// several may share a pod.
#[derive(Default)]
pub(super) struct PortsByPod(HashMap<String, String>);

impl PortsByPod {
    /// The PORTS cell of pod `pod_id`; empty for a pod removed since it was listed.
    pub(super) async fn get(
        &mut self,
        client: &mut CriClient,
        pod_id: &str,
    ) -> Result<String, CliError> {
        if let Some(text) = self.0.get(pod_id) {
            return Ok(text.clone());
        }
        let text = match pod_network(client, pod_id).await {
            Ok(network) => ports_text(&network.ports),
            Err(err) if err.is_not_found() => String::new(),
            Err(err) => return Err(err),
        };
        self.0.insert(pod_id.to_string(), text.clone());
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(
        host_ip: Option<&str>,
        host_port: Option<u16>,
        container_port: u16,
        protocol: PortProtocol,
    ) -> PublishedPort {
        PublishedPort {
            host_ip: host_ip.map(|ip| ip.parse().unwrap()),
            host_port,
            container_port,
            protocol,
        }
    }

    #[test]
    fn publish_reads_like_docker() {
        use PortProtocol::{Tcp, Udp};
        let cases = [
            ("80", published(None, None, 80, Tcp)),
            ("8080:80", published(None, Some(8080), 80, Tcp)),
            ("8080:80/tcp", published(None, Some(8080), 80, Tcp)),
            ("5353:53/udp", published(None, Some(5353), 53, Udp)),
            ("53/UDP", published(None, None, 53, Udp)),
            (
                "127.0.0.1:8080:80",
                published(Some("127.0.0.1"), Some(8080), 80, Tcp),
            ),
            ("127.0.0.1::80", published(Some("127.0.0.1"), None, 80, Tcp)),
            (":8080:80", published(None, Some(8080), 80, Tcp)),
            ("[::1]:8080:80", published(Some("::1"), Some(8080), 80, Tcp)),
            ("[::1]::80/udp", published(Some("::1"), None, 80, Udp)),
            ("65535:1", published(None, Some(65535), 1, Tcp)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_publish(text).unwrap(), expected, "{text}");
        }
    }

    #[test]
    fn bad_publish_values_are_named() {
        let cases = [
            ("", "container port \"\""),
            ("0", "container port \"0\""),
            ("8080:65536", "container port \"65536\""),
            ("0:80", "host port \"0\""),
            ("x:80", "host port \"x\""),
            ("8080:", "container port \"\""),
            ("8080:80/sctp", "SCTP"),
            ("8080:80/icmp", "unknown protocol \"icmp\""),
            ("localhost:8080:80", "host IP \"localhost\""),
            ("1.2.3:8080:80", "host IP \"1.2.3\""),
            ("8000-8010:80", "port ranges"),
            ("1.2.3.4:1:2:3", "use [HOST_IP:]"),
            ("127.0.0.1:80", "host port \"127.0.0.1\""),
            ("[::1]:80", "use [HOST_IP:]"),
            ("[::1]8080:80", "IPv6"),
            ("::1:8080:80", "use [HOST_IP:]"),
        ];
        for (text, expected) in cases {
            let err = parse_publish(text).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("port {text:?}: ")) && err.contains(expected),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn private_ports_default_to_tcp() {
        let port = |port, protocol| PrivatePort { port, protocol };
        assert_eq!(
            parse_private_port("80").unwrap(),
            port(80, PortProtocol::Tcp)
        );
        assert_eq!(
            parse_private_port("53/udp").unwrap(),
            port(53, PortProtocol::Udp)
        );
        assert_eq!(port(53, PortProtocol::Udp).to_string(), "53/udp");
        for bad in ["", "0", "http", "80/xdp", "1-2", "70000"] {
            assert!(parse_private_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn free_host_ports_are_picked_and_distinct() {
        let ports = [
            published(Some("127.0.0.1"), None, 80, PortProtocol::Tcp),
            published(Some("127.0.0.1"), None, 81, PortProtocol::Tcp),
            published(None, None, 53, PortProtocol::Udp),
            published(None, Some(8080), 80, PortProtocol::Tcp),
        ];
        let mappings = port_mappings(&ports).unwrap();
        assert_eq!(mappings.len(), 4);
        let picked: Vec<i32> = mappings[..3].iter().map(|m| m.host_port).collect();
        assert!(picked.iter().all(|port| *port > 0), "{picked:?}");
        assert_ne!(picked[0], picked[1]);
        assert_eq!(
            mappings[3],
            PortMapping {
                protocol: Protocol::Tcp as i32,
                container_port: 80,
                host_port: 8080,
                host_ip: String::new(),
            }
        );
        assert_eq!(mappings[0].host_ip, "127.0.0.1");
        assert_eq!(mappings[2].protocol, Protocol::Udp as i32);
        // The probes are closed again: the daemon can bind the ports.
        TcpListener::bind(("127.0.0.1", u16::try_from(picked[0]).unwrap())).unwrap();
    }

    #[test]
    fn host_ports_read_back_and_print_like_docker() {
        let info = serde_json::json!([
            {"protocol": "udp", "hostIp": "127.0.0.1", "hostPort": 5353, "containerPort": 53},
            {"protocol": "tcp", "hostIp": "0.0.0.0", "hostPort": 8080, "containerPort": 80},
            {"protocol": "tcp", "hostIp": "::1", "hostPort": 8081, "containerPort": 80},
        ]);
        let ports: Vec<HostPort> = serde_json::from_value(info).unwrap();
        assert_eq!(
            ports_text(&ports),
            "127.0.0.1:5353->53/udp, 0.0.0.0:8080->80/tcp, [::1]:8081->80/tcp"
        );
        assert_eq!(ports_text(&[]), "");
    }
}

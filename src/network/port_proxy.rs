//! Host ports (CRI `port_mappings`): a userspace proxy in criusd that listens on the
//! node's address and port and relays each TCP connection, and each UDP peer's
//! datagrams, to the pod's address.
//!
//! Why a proxy rather than DNAT rules: it needs no nftables or iptables on the node and
//! never touches the host's firewall (rules crius does not own are never at risk), it
//! answers on 127.0.0.1 without `route_localnet`, it works the same with the built-in
//! bridge and with CNI networks, and a port that is taken fails RunPodSandbox with an
//! error naming it instead of silently shadowing another service. The cost: the pod sees
//! connections from the node's bridge address rather than the client's, and bytes cross
//! user space. criusd opens the listeners again when it restarts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

use super::NetworkError;

/// A UDP peer that sent nothing for this long loses its relay socket.
const UDP_IDLE: Duration = Duration::from_secs(60);
/// Largest UDP datagram relayed.
const UDP_MAX: usize = 65_535;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One host port of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    /// The node address listened on; unspecified (0.0.0.0) means all of them.
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

/// The relays of every pod with host ports, by sandbox id.
#[derive(Default)]
pub struct PortProxies {
    relays: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
}

impl PortProxies {
    /// Listens on every mapping of `sandbox_id` and relays to `pod_ip`. Either all
    /// listeners open or none stays open. Must run inside the tokio runtime.
    pub fn open(
        &self,
        sandbox_id: &str,
        pod_ip: Ipv4Addr,
        mappings: &[PortMapping],
    ) -> Result<(), NetworkError> {
        let mut relays = Vec::new();
        for mapping in mappings {
            let listen = SocketAddr::new(mapping.host_ip, mapping.host_port);
            let target = SocketAddr::new(IpAddr::V4(pod_ip), mapping.container_port);
            let in_use = |source| NetworkError::HostPort {
                mapping: mapping.clone(),
                source,
            };
            let relay = match mapping.protocol {
                Protocol::Tcp => {
                    let listener = std::net::TcpListener::bind(listen)
                        .and_then(|listener| {
                            listener.set_nonblocking(true)?;
                            TcpListener::from_std(listener)
                        })
                        .map_err(in_use);
                    listener.map(|listener| tokio::spawn(relay_tcp(listener, target)))
                }
                Protocol::Udp => {
                    let socket = std::net::UdpSocket::bind(listen)
                        .and_then(|socket| {
                            socket.set_nonblocking(true)?;
                            UdpSocket::from_std(socket)
                        })
                        .map_err(in_use);
                    socket.map(|socket| tokio::spawn(relay_udp(Arc::new(socket), target)))
                }
            };
            match relay {
                Ok(relay) => relays.push(relay),
                Err(err) => {
                    relays.iter().for_each(JoinHandle::abort);
                    return Err(err);
                }
            }
        }
        if !relays.is_empty() {
            self.lock().insert(sandbox_id.to_string(), relays);
        }
        Ok(())
    }

    /// Stops the relays of `sandbox_id` and frees its ports; closing twice is fine.
    pub fn close(&self, sandbox_id: &str) {
        if let Some(relays) = self.lock().remove(sandbox_id) {
            relays.iter().for_each(JoinHandle::abort);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<JoinHandle<()>>>> {
        self.relays
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Accepts connections for as long as the pod keeps its port; each is relayed by a task
/// of its own. The listener closes when this task is aborted; connections in flight
/// end when either side closes.
async fn relay_tcp(listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            match TcpStream::connect(target).await {
                Ok(mut pod) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut pod).await;
                }
                Err(err) => tracing::debug!(%target, "host port: cannot reach the pod: {err}"),
            }
        });
    }
}

/// Relays datagrams: each peer gets a socket of its own towards the pod, so the pod's
/// answers find their way back; it is dropped after [`UDP_IDLE`] of silence. The answer
/// relays live in a `JoinSet`, so aborting this task ends them too and frees the port.
async fn relay_udp(listener: Arc<UdpSocket>, target: SocketAddr) {
    let peers: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut answers = JoinSet::new();
    let mut buffer = vec![0u8; UDP_MAX];
    loop {
        while answers.try_join_next().is_some() {}
        let Ok((length, peer)) = listener.recv_from(&mut buffer).await else {
            continue;
        };
        let existing = peers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .get(&peer)
            .cloned();
        let upstream = match existing {
            Some(upstream) => upstream,
            None => {
                let Ok(upstream) = connected_udp(target).await else {
                    continue;
                };
                let upstream = Arc::new(upstream);
                peers
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner())
                    .insert(peer, upstream.clone());
                answers.spawn(relay_udp_answers(
                    listener.clone(),
                    upstream.clone(),
                    peer,
                    peers.clone(),
                ));
                upstream
            }
        };
        let _ = upstream.send(&buffer[..length]).await;
    }
}

async fn connected_udp(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.connect(target).await?;
    Ok(socket)
}

async fn relay_udp_answers(
    listener: Arc<UdpSocket>,
    upstream: Arc<UdpSocket>,
    peer: SocketAddr,
    peers: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
) {
    let mut buffer = vec![0u8; UDP_MAX];
    while let Ok(Ok(length)) = tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buffer)).await {
        let _ = listener.send_to(&buffer[..length], peer).await;
    }
    peers
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .remove(&peer);
}

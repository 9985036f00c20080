//! RunPodSandbox: a pod's namespaces (held by its shim, no pause image; the shared PID
//! namespace by an init the shim clones), hostname, DNS and hosts files and shared
//! /dev/shm, recorded as READY. Every acquired resource is rolled back when a later step
//! fails.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use nix::mount::{mount, MsFlags};

use super::api::{
    self, NamespaceMode, PodSandboxConfig, RunPodSandboxRequest, RunPodSandboxResponse,
};
use super::pod_shims::blocking;
use super::rollback::Rollback;
use super::{new_id, now_ns, Cri, CriError};
use crate::network::{PodIdentity, PortMapping, Protocol};
use crate::runtime::{hosts_file, resolv_conf, DnsConfig};
use crate::shim::daemon::PodNamespaces;
use crate::shim::manager::ShimPids;
use crate::shim::runc::OciRuntime;
use crate::snapshot::rootfs::unmount;
use crate::store::{SandboxRecord, SandboxState};

/// Size of a pod's /dev/shm, as Docker and containerd default it.
const SHM_SIZE: &str = "size=65536k";

impl Cri {
    pub(super) async fn run_pod_sandbox(
        &self,
        request: RunPodSandboxRequest,
    ) -> Result<RunPodSandboxResponse, CriError> {
        let config = request
            .config
            .ok_or_else(|| CriError::invalid("config", "is required"))?;
        let metadata = config
            .metadata
            .clone()
            .ok_or_else(|| CriError::invalid("config.metadata", "is required"))?;
        for (field, value) in [
            ("config.metadata.name", &metadata.name),
            ("config.metadata.namespace", &metadata.namespace),
            ("config.metadata.uid", &metadata.uid),
        ] {
            if value.is_empty() {
                return Err(CriError::invalid(field, "is required"));
            }
        }
        tracing::Span::current().record("name", metadata.name.as_str());
        let runtime = self.runtime_of(&request.runtime_handler)?;
        let modes = namespace_modes(&config)?;
        let port_mappings = if modes.host_network {
            // The pod uses the node's ports directly.
            Vec::new()
        } else {
            port_mappings(&config.port_mappings)?
        };

        // Claim the name: a retry of the same pod attempt gets the same sandbox back.
        let _names = self.names.lock().await;
        if let Some(existing) = self.sandboxes.list().into_iter().find(|sandbox| {
            sandbox.same_pod_attempt(
                &metadata.name,
                &metadata.namespace,
                &metadata.uid,
                metadata.attempt,
            )
        }) {
            return Ok(RunPodSandboxResponse {
                pod_sandbox_id: existing.id,
            });
        }

        let id = new_id()?;
        tracing::Span::current().record("id", id.as_str());
        let hostname = if modes.host_network {
            String::new()
        } else {
            config.hostname.clone()
        };
        let mut rollback = Rollback::default();

        let dir = self.sandbox_dir(&id);
        std::fs::create_dir_all(&dir)
            .map_err(|err| io_error("create the sandbox directory", &dir, err))?;
        let removed = dir.clone();
        rollback.push("the sandbox directory", move || {
            std::fs::remove_dir_all(&removed).map_err(|err| err.to_string())
        });
        let mut netns = None;
        let (mut ip, mut ip6) = (None, None);
        if !modes.host_network {
            let (network, pod) = (self.network.clone(), id.clone());
            let identity = PodIdentity {
                name: metadata.name.clone(),
                namespace: metadata.namespace.clone(),
                uid: metadata.uid.clone(),
            };
            let mappings = port_mappings.clone();
            let attachment = blocking(move || network.set_up(&pod, &identity, &mappings)).await?;
            let (network, pod) = (self.network.clone(), id.clone());
            rollback.push("the pod's network", move || {
                network
                    .tear_down(&pod)
                    .and_then(|()| network.remove_netns(&pod))
                    .map_err(|err| err.to_string())
            });
            if let Some(address) = attachment.ip {
                self.network.open_ports(&id, address, &port_mappings)?;
            }
            netns = Some(attachment.netns);
            ip = attachment.ip;
            ip6 = attachment.ip6;
        }
        let ips: Vec<IpAddr> = ip
            .map(IpAddr::V4)
            .into_iter()
            .chain(ip6.map(IpAddr::V6))
            .collect();
        write_sandbox_files(&dir, &config, &hostname, modes.host_network, &ips)?;
        if !modes.host_ipc {
            let shm = dir.join("shm");
            mount_shm(&shm)?;
            rollback.push("the pod's /dev/shm", move || {
                unmount(&shm).map_err(|err| err.to_string())
            });
        }

        let namespaces = PodNamespaces {
            network: netns,
            ipc: !modes.host_ipc,
            uts: !modes.host_network,
            pid: modes.pod_pid,
        };
        let shim = self
            .shims
            .start(
                &id,
                runtime,
                namespaces,
                (!hostname.is_empty()).then(|| hostname.clone()),
            )
            .await?;
        let stopping = shim.clone();
        rollback.push("the pod's shim", move || {
            stopping.shutdown(true).map_err(|err| err.to_string())
        });
        let ShimPids {
            shim: shim_pid,
            pid_namespace_init,
        } = shim.pids()?;

        let linux = config.linux.clone().unwrap_or_default();
        let record = SandboxRecord {
            id: id.clone(),
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            attempt: metadata.attempt,
            labels: config.labels.into_iter().collect(),
            annotations: config.annotations.into_iter().collect(),
            created_at: now_ns(),
            state: SandboxState::Ready,
            hostname,
            host_network: modes.host_network,
            host_ipc: modes.host_ipc,
            host_pid: modes.host_pid,
            pid_namespace_init,
            log_directory: config.log_directory,
            runtime_handler: request.runtime_handler,
            cgroup_parent: linux.cgroup_parent,
            sysctls: linux.sysctls.into_iter().collect::<BTreeMap<_, _>>(),
            shim_pid,
            ip,
            ip6,
            port_mappings,
        };
        self.sandboxes.insert(record)?;
        rollback.commit();
        tracing::info!("pod sandbox ready");
        Ok(RunPodSandboxResponse { pod_sandbox_id: id })
    }
}

/// Which of the pod's namespaces are the node's, and whether its containers share one
/// PID namespace.
struct NamespaceModes {
    host_network: bool,
    host_ipc: bool,
    host_pid: bool,
    /// POD pid mode (the protobuf default): one PID namespace for the pod's containers.
    /// CONTAINER gives each its own.
    pod_pid: bool,
}

fn namespace_modes(config: &PodSandboxConfig) -> Result<NamespaceModes, CriError> {
    let options = config
        .linux
        .as_ref()
        .and_then(|linux| linux.security_context.as_ref())
        .and_then(|security| security.namespace_options.clone())
        .unwrap_or_default();
    let node = NamespaceMode::Node as i32;
    if options.pid == NamespaceMode::Target as i32 {
        return Err(CriError::invalid(
            "config.linux.security_context.namespace_options.pid",
            "TARGET names a container to share with: it applies to containers, not pods",
        ));
    }
    Ok(NamespaceModes {
        host_network: options.network == node,
        host_ipc: options.ipc == node,
        host_pid: options.pid == node,
        pod_pid: options.pid == NamespaceMode::Pod as i32,
    })
}

impl Cri {
    /// The OCI runtime of runtime handler `handler` (`""`: the default handler); an
    /// unknown handler is refused naming it and the known ones.
    pub(super) fn runtime_of(&self, handler: &str) -> Result<OciRuntime, CriError> {
        self.config.runtime(handler).cloned().ok_or_else(|| {
            let known: Vec<String> = self
                .config
                .runtime_handlers()
                .map(|name| format!("{name:?}"))
                .collect();
            CriError::invalid(
                "runtime_handler",
                format!(
                    "{handler:?} is not a runtime handler of this node (known: {})",
                    known.join(", ")
                ),
            )
        })
    }
}

/// The pod's host ports, checked. A mapping without a host port only documents the
/// container port (Kubernetes' `hostPort: 0`) and needs nothing.
fn port_mappings(requested: &[api::PortMapping]) -> Result<Vec<PortMapping>, CriError> {
    const FIELD: &str = "config.port_mappings";
    let mut mappings = Vec::new();
    for (index, mapping) in requested.iter().enumerate() {
        if mapping.host_port == 0 {
            continue;
        }
        let port = |name: &str, value: i32| {
            u16::try_from(value)
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| {
                    CriError::invalid(
                        FIELD,
                        format!("[{index}].{name} {value} is not a port number"),
                    )
                })
        };
        let protocol = match api::Protocol::try_from(mapping.protocol) {
            Ok(api::Protocol::Tcp) => Protocol::Tcp,
            Ok(api::Protocol::Udp) => Protocol::Udp,
            _ => {
                return Err(CriError::invalid(
                    FIELD,
                    format!("[{index}].protocol: only TCP and UDP host ports are supported"),
                ))
            }
        };
        let host_ip = if mapping.host_ip.is_empty() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            mapping.host_ip.parse().map_err(|_| {
                CriError::invalid(
                    FIELD,
                    format!(
                        "[{index}].host_ip {:?} is not an IP address",
                        mapping.host_ip
                    ),
                )
            })?
        };
        mappings.push(PortMapping {
            protocol,
            host_ip,
            host_port: port("host_port", mapping.host_port)?,
            container_port: port("container_port", mapping.container_port)?,
        });
    }
    Ok(mappings)
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf for the pod's containers. Host-network
/// pods see the node's files.
fn write_sandbox_files(
    dir: &Path,
    config: &PodSandboxConfig,
    hostname: &str,
    host_network: bool,
    ips: &[IpAddr],
) -> Result<(), CriError> {
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|err| io_error("write", &path, err))
    };
    let host_file = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    if host_network {
        write("hostname", host_file("/etc/hostname"))?;
        write("hosts", host_file("/etc/hosts"))?;
    } else {
        write("hostname", format!("{hostname}\n"))?;
        write("hosts", hosts_file(hostname, ips, &[]))?;
    }
    let resolv = match &config.dns_config {
        Some(dns) => resolv_conf(&DnsConfig {
            servers: dns.servers.clone(),
            searches: dns.searches.clone(),
            options: dns.options.clone(),
        }),
        None => host_file("/etc/resolv.conf"),
    };
    write("resolv.conf", resolv)
}

/// The pod's own /dev/shm: a tmpfs its containers bind-mount.
fn mount_shm(path: &Path) -> Result<(), CriError> {
    std::fs::create_dir_all(path).map_err(|err| io_error("create", path, err))?;
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(SHM_SIZE),
    )
    .map_err(|errno| {
        io_error(
            "mount the pod's /dev/shm at",
            path,
            std::io::Error::from(errno),
        )
    })
}

pub(super) fn io_error(what: &'static str, path: &Path, err: std::io::Error) -> CriError {
    CriError::Internal {
        what,
        reason: format!("{}: {err}", path.display()),
    }
}

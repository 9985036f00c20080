//! Pod networking: each pod's network namespace, the built-in bridge network that
//! connects it, and its host ports.
//!
//! - `netns`: namespaces pinned at `state/netns/<sandbox id>` (loopback up).
//! - `netlink`: the bridge and veth pairs, over rtnetlink.
//! - `ipam`: which address of the subnet each pod holds, persisted per address.
//! - `port_proxy`: host ports relayed by criusd.
//!
//! A pod's life here: [`PodNetwork::set_up`] (namespace, address, veth) at RunPodSandbox,
//! [`PodNetwork::tear_down`] (ports, veth, address) at StopPodSandbox, and
//! [`PodNetwork::remove_netns`] at RemovePodSandbox. Each is idempotent, and what a crash
//! leaves half-made is collected at the next start ([`PodNetwork::collect_garbage`]).
//! Everything that blocks (netlink, namespaces) is synchronous: callers run it off the
//! async workers.

mod ipam;
mod loopback;
mod netlink;
mod netns;
mod port_proxy;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use ipam::Subnet;
pub use loopback::bring_up_loopback;
pub use port_proxy::{PortMapping, Protocol};

use crate::config::{NetworkConfig, NetworkMode};
use ipam::Ipam;
use port_proxy::PortProxies;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot {what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot {what}: {source}")]
    Sys {
        what: &'static str,
        source: nix::errno::Errno,
    },
    #[error("no free address left in the pod subnet {subnet}")]
    SubnetExhausted { subnet: String },
    #[error("host port {}/{} on {}: {source}", .mapping.host_port, .mapping.protocol, .mapping.host_ip)]
    HostPort {
        mapping: PortMapping,
        source: std::io::Error,
    },
    #[error("pod networking is not ready: {0}")]
    NotReady(String),
    #[error("a network namespace thread panicked")]
    Panicked,
}

impl NetworkError {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> NetworkError {
        NetworkError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    fn sys(what: &'static str, source: nix::errno::Errno) -> NetworkError {
        NetworkError::Sys { what, source }
    }
}

/// What a pod got from [`PodNetwork::set_up`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttachment {
    /// Where its network namespace is pinned.
    pub netns: PathBuf,
    /// Its address; `None` when the node runs pods with a loopback only.
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address on a dual-stack network.
    pub ip6: Option<Ipv6Addr>,
}

/// The node's pod network, as the config describes it.
pub struct PodNetwork {
    mode: NetworkMode,
    bridge: String,
    /// The IPv4 subnet, and the IPv6 one of a dual-stack network, each with its IPAM.
    subnets: Vec<(Subnet, Ipam)>,
    netns_dir: PathBuf,
    proxies: PortProxies,
    /// Why pods cannot be networked now, if they cannot; reported as NetworkReady.
    not_ready: Mutex<Option<String>>,
}

impl PodNetwork {
    /// The network of `config` on `subnets` (IPv4, then an optional IPv6 one), keeping
    /// its state under `state`. Touches nothing yet.
    pub fn new(config: &NetworkConfig, subnets: &[Subnet], state: &Path) -> PodNetwork {
        let ipam_dir = state.join("network").join("ipam").join(&config.bridge);
        PodNetwork {
            mode: config.mode,
            bridge: config.bridge.clone(),
            subnets: subnets
                .iter()
                .map(|subnet| (*subnet, Ipam::new(*subnet, ipam_dir.clone())))
                .collect(),
            netns_dir: state.join("netns"),
            proxies: PortProxies::default(),
            not_ready: Mutex::new(Some("not prepared yet".to_string())),
        }
    }

    /// Brings up the node's side (the bridge); NetworkReady follows the outcome. Safe to
    /// call again: a bridge that exists is kept as it is.
    pub fn prepare(&self) {
        let outcome = match self.mode {
            NetworkMode::Bridge => netlink::ensure_bridge(&self.bridge, &self.subnet_list())
                .map_err(|err| format!("cannot set up the bridge {}: {err}", self.bridge))
                .err(),
            NetworkMode::None => Some(
                "pod networking is off (network.mode = \"none\"): pods get a loopback interface only"
                    .to_string(),
            ),
        };
        match &outcome {
            Some(reason) => tracing::warn!("pod network not ready: {reason}"),
            None => {
                tracing::info!(bridge = %self.bridge, subnets = %self.subnet_list().iter().map(Subnet::to_string).collect::<Vec<_>>().join(", "), "pod network ready")
            }
        }
        *self.lock_not_ready() = outcome;
    }

    /// `None` when pods can be networked, else why not.
    pub fn not_ready(&self) -> Option<String> {
        self.lock_not_ready().clone()
    }

    /// The active network mode and its settings, for `Status`' verbose info.
    pub fn describe(&self) -> serde_json::Value {
        match self.mode {
            NetworkMode::Bridge => serde_json::json!({
                "mode": "bridge",
                "bridge": self.bridge,
                "subnets": self.subnet_list().iter().map(Subnet::to_string).collect::<Vec<_>>(),
                "gateways": self
                    .subnet_list()
                    .iter()
                    .map(|subnet| subnet.gateway().to_string())
                    .collect::<Vec<_>>(),
            }),
            NetworkMode::None => serde_json::json!({ "mode": "none" }),
        }
    }

    /// Where the namespace of `sandbox_id` is pinned.
    pub fn netns_path(&self, sandbox_id: &str) -> PathBuf {
        self.netns_dir.join(sandbox_id)
    }

    /// Creates the pod's namespace and connects it. On failure nothing is left.
    pub fn set_up(&self, sandbox_id: &str) -> Result<PodAttachment, NetworkError> {
        let netns = self.netns_path(sandbox_id);
        netns::create(&netns)?;
        let addresses = match self.mode {
            NetworkMode::None => Vec::new(),
            NetworkMode::Bridge => match self.connect(sandbox_id, &netns) {
                Ok(addresses) => addresses,
                Err(err) => {
                    if let Err(cleanup) = netns::remove(&netns) {
                        tracing::warn!(sandbox = %sandbox_id, "cannot remove the network namespace: {cleanup}");
                    }
                    return Err(err);
                }
            },
        };
        let ip = addresses.iter().find_map(|address| match address {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let ip6 = addresses.iter().find_map(|address| match address {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        Ok(PodAttachment { netns, ip, ip6 })
    }

    /// Allocates the pod an address in every subnet and attaches it to the bridge.
    fn connect(&self, sandbox_id: &str, netns: &Path) -> Result<Vec<IpAddr>, NetworkError> {
        if self.not_ready().is_some() {
            // The bridge may have been deleted or failed at start: try once more.
            self.prepare();
            if let Some(reason) = self.not_ready() {
                return Err(NetworkError::NotReady(reason));
            }
        }
        let mut addresses = Vec::new();
        let attached = self
            .subnets
            .iter()
            .try_for_each(|(subnet, ipam)| {
                addresses.push((ipam.allocate(sandbox_id)?, *subnet));
                Ok(())
            })
            .and_then(|()| {
                netlink::attach(&self.bridge, &host_veth(sandbox_id), netns, &addresses)
            });
        if let Err(err) = attached {
            let _ = self.release_addresses(sandbox_id);
            return Err(err);
        }
        Ok(addresses.into_iter().map(|(address, _)| address).collect())
    }

    /// Relays the pod's host ports to `ip`. Must run inside the tokio runtime.
    pub fn open_ports(
        &self,
        sandbox_id: &str,
        ip: Ipv4Addr,
        mappings: &[PortMapping],
    ) -> Result<(), NetworkError> {
        self.proxies.open(sandbox_id, ip, mappings)
    }

    /// Releases what connects the pod (host ports, veth, address); its namespace stays
    /// until [`PodNetwork::remove_netns`]. Idempotent.
    pub fn tear_down(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        self.proxies.close(sandbox_id);
        if self.mode == NetworkMode::Bridge {
            netlink::delete_link(&host_veth(sandbox_id))?;
        }
        self.release_addresses(sandbox_id)
    }

    /// Unpins the pod's namespace. Idempotent.
    pub fn remove_netns(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        netns::remove(&self.netns_path(sandbox_id))
    }

    /// Frees the namespaces and addresses of pods that no record knows: what a criusd
    /// killed in the middle of RunPodSandbox left behind.
    pub fn collect_garbage(&self, known: &HashSet<String>) {
        if let Ok(entries) = std::fs::read_dir(&self.netns_dir) {
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    tracing::info!(sandbox = %name, "removing the network namespace of an unknown pod");
                    if let Err(err) = self
                        .tear_down(&name)
                        .and_then(|()| self.remove_netns(&name))
                    {
                        tracing::warn!(sandbox = %name, "{err}");
                    }
                }
            }
        }
        for (_, ipam) in &self.subnets {
            for (ip, holder) in ipam.allocations() {
                if !known.contains(&holder) {
                    let _ = ipam.release(ip, &holder);
                }
            }
        }
    }

    fn release_addresses(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        for (_, ipam) in &self.subnets {
            for (ip, holder) in ipam.allocations() {
                if holder == sandbox_id {
                    ipam.release(ip, sandbox_id)?;
                }
            }
        }
        Ok(())
    }

    fn subnet_list(&self) -> Vec<Subnet> {
        self.subnets.iter().map(|(subnet, _)| *subnet).collect()
    }

    fn lock_not_ready(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.not_ready
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The node's end of a pod's veth pair: `cv` and the start of the sandbox id, within the
/// 15 bytes an interface name may have.
fn host_veth(sandbox_id: &str) -> String {
    let short: String = sandbox_id.chars().take(13).collect();
    format!("cv{short}")
}

//! Pod networking: each pod's network namespace, what connects it (the built-in bridge
//! network or CNI plugins), and its host ports.
//!
//! - `netns`: namespaces pinned at `state/netns/<sandbox id>` (loopback up).
//! - `netlink`: the bridge and veth pairs, over rtnetlink.
//! - `ipam`: which address of the subnet each pod holds, persisted per address.
//! - `cni`, `cni_config`: CNI mode, the plugins of a network config list.
//! - `port_proxy`: host ports relayed by criusd (unless a CNI plugin maps them).
//!
//! A pod's life here: [`PodNetwork::set_up`] (namespace, then address and veth, or CNI
//! ADD) at RunPodSandbox, [`PodNetwork::tear_down`] (ports, then veth and address, or CNI
//! DEL) at StopPodSandbox, and [`PodNetwork::remove_netns`] at RemovePodSandbox. Each is
//! idempotent, and what a crash leaves half-made is collected at the next start
//! ([`PodNetwork::collect_garbage`]). In "auto" mode each new pod goes to CNI or the
//! bridge by whether a CNI config is there at that moment; a pod is torn down by what set
//! it up (its CNI cache entry says), whatever the mode is by then. Everything that blocks
//! (netlink, namespaces, plugins) is synchronous: callers run it off the async workers.

mod cni;
mod cni_config;
mod ipam;
mod loopback;
mod masquerade;
mod netlink;
mod netns;
mod port_proxy;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use ipam::Subnet;
pub use loopback::bring_up_loopback;
pub use port_proxy::{PortMapping, Protocol};

use crate::config::{NetworkConfig, NetworkMode};
use cni::Cni;
pub use cni::CniError;
pub use cni_config::CniConfigError;
use ipam::Ipam;
use masquerade::Masquerade;
use port_proxy::PortProxies;

/// How long connecting to a pod's port may take.
pub const POD_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP connection to `port` on this thread's loopback, IPv4 first (as `localhost`
/// resolves), for port forwarding.
pub fn connect_to_loopback(port: u16) -> Result<TcpStream, NetworkError> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&v4, POD_CONNECT_TIMEOUT)
        .or_else(|first| TcpStream::connect_timeout(&v6, POD_CONNECT_TIMEOUT).map_err(|_| first))
        .map_err(|source| NetworkError::PodPort { port, source })
}

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
    #[error("cannot {what} the masquerade table inet {table}: {reason}")]
    Masquerade {
        what: &'static str,
        table: String,
        reason: String,
    },
    #[error("pod networking is not ready: {0}")]
    NotReady(String),
    #[error("a network namespace thread panicked")]
    Panicked,
    #[error("cannot connect to port {port} on the pod's loopback: {source}")]
    PodPort { port: u16, source: std::io::Error },
    #[error(transparent)]
    Cni(#[from] CniError),
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

/// Who a pod is in Kubernetes (its sandbox config's metadata), for CNI plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// What a pod got from [`PodNetwork::set_up`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttachment {
    /// Where its network namespace is pinned.
    pub netns: PathBuf,
    /// Its address; `None` when the node runs pods with a loopback only, or the CNI
    /// result has no IPv4 address.
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address on a dual-stack bridge network.
    pub ip6: Option<Ipv6Addr>,
}

/// What connects a new pod now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attach {
    Bridge,
    Cni,
    LoopbackOnly,
}

/// The node's pod network, as the config describes it.
pub struct PodNetwork {
    mode: NetworkMode,
    bridge: String,
    /// The bridge's IPv4 subnet, and the IPv6 one of a dual-stack network, each with its
    /// IPAM.
    subnets: Vec<(Subnet, Ipam)>,
    netns_dir: PathBuf,
    /// The bridge's outbound masquerade table: kept up to date while `masquerade_on`,
    /// else removed if an earlier run made it.
    masquerade: Masquerade,
    masquerade_on: bool,
    proxies: PortProxies,
    cni: Cni,
    /// The bridge's state: `None` until first prepared, then why it cannot network pods
    /// (`Some(Some(reason))`) or not.
    bridge_not_ready: Mutex<Option<Option<String>>>,
}

impl PodNetwork {
    /// The network of `config` on `subnets` (IPv4, then an optional IPv6 one), keeping its
    /// state under `state` (and the CNI cache under `root`, as long-lived as the pod
    /// records). Touches nothing yet.
    pub fn new(
        config: &NetworkConfig,
        subnets: &[Subnet],
        state: &Path,
        root: &Path,
    ) -> PodNetwork {
        let ipam_dir = state.join("network").join("ipam").join(&config.bridge);
        let cni_cache = config
            .cni_cache_dir
            .clone()
            .unwrap_or_else(|| root.join("cni"));
        PodNetwork {
            mode: config.mode,
            bridge: config.bridge.clone(),
            subnets: subnets
                .iter()
                .map(|subnet| (*subnet, Ipam::new(*subnet, ipam_dir.clone())))
                .collect(),
            netns_dir: state.join("netns"),
            masquerade: Masquerade::new(&config.bridge, state),
            masquerade_on: config.masquerade,
            proxies: PortProxies::default(),
            cni: Cni::new(&config.cni_conf_dir, &config.cni_bin_dirs, &cni_cache),
            bridge_not_ready: Mutex::new(None),
        }
    }

    /// What connects a pod created now: in "auto" mode, CNI while its conf dir holds a
    /// config, else the bridge.
    fn attach(&self) -> Attach {
        match self.mode {
            NetworkMode::Bridge => Attach::Bridge,
            NetworkMode::Cni => Attach::Cni,
            NetworkMode::None => Attach::LoopbackOnly,
            NetworkMode::Auto if self.cni.has_config() => Attach::Cni,
            NetworkMode::Auto => Attach::Bridge,
        }
    }

    /// Brings up the node's side (the bridge) when pods go to the bridge, and logs
    /// whether pods can be networked. Safe to call again: a bridge that exists is kept
    /// as it is. A node whose pods go to CNI gets no bridge of crius's.
    pub fn prepare(&self) {
        let attach = self.attach();
        if attach == Attach::Bridge {
            self.prepare_bridge();
        }
        match self.not_ready() {
            Some(reason) => tracing::warn!("pod network not ready: {reason}"),
            None if attach == Attach::Cni => {
                tracing::info!(network = %self.describe(), "pod network ready: CNI")
            }
            None => {
                let subnets: Vec<String> =
                    self.subnet_list().iter().map(Subnet::to_string).collect();
                tracing::info!(bridge = %self.bridge, subnets = %subnets.join(", "), "pod network ready")
            }
        }
    }

    /// `None` when pods can be networked, else why not. CNI readiness is looked up each
    /// time, so that a config or plugin installed later (by a CNI DaemonSet) counts.
    pub fn not_ready(&self) -> Option<String> {
        match self.attach() {
            Attach::Bridge => self.bridge_not_ready(),
            Attach::Cni => self.cni.network().err().map(|err| err.to_string()),
            Attach::LoopbackOnly => Some(
                "pod networking is off (network.mode = \"none\"): pods get a loopback interface only"
                    .to_string(),
            ),
        }
    }

    /// Why the bridge cannot network pods, if it cannot. It is set up on first need:
    /// "auto" may have started on CNI and lost its config since.
    fn bridge_not_ready(&self) -> Option<String> {
        let known = self.lock_bridge_not_ready().clone();
        known.unwrap_or_else(|| self.prepare_bridge())
    }

    /// Creates (or adopts) the bridge and its masquerade; remembers and returns why that
    /// failed, if it did. A node configured to masquerade is not ready without it: its
    /// pods would start but not reach beyond the node.
    fn prepare_bridge(&self) -> Option<String> {
        let outcome = netlink::ensure_bridge(&self.bridge, &self.subnet_list())
            .map_err(|err| format!("cannot set up the bridge {}: {err}", self.bridge))
            .and_then(|()| self.prepare_masquerade().map_err(|err| err.to_string()))
            .err();
        *self.lock_bridge_not_ready() = Some(outcome.clone());
        outcome
    }

    /// Writes the masquerade table when it is on; removes crius's table when it is off.
    fn prepare_masquerade(&self) -> Result<(), NetworkError> {
        if self.masquerade_on {
            return self.masquerade.apply(&self.subnet_list());
        }
        if let Err(err) = self.masquerade.remove_if_made() {
            tracing::warn!("{err}");
        }
        Ok(())
    }

    /// The network new pods get and its settings, for `Status`' verbose info.
    pub fn describe(&self) -> serde_json::Value {
        let configured = serde_json::to_value(self.mode).unwrap_or_default();
        let mut described = match self.attach() {
            Attach::Bridge => serde_json::json!({
                "mode": "bridge",
                "bridge": self.bridge,
                "subnets": self.subnet_list().iter().map(Subnet::to_string).collect::<Vec<_>>(),
                "gateways": self
                    .subnet_list()
                    .iter()
                    .map(|subnet| subnet.gateway().to_string())
                    .collect::<Vec<_>>(),
                "masquerade": self
                    .masquerade_on
                    .then(|| format!("inet {}", self.masquerade.table_name())),
            }),
            Attach::Cni => {
                let mut cni = serde_json::json!({
                    "mode": "cni",
                    "confDir": self.cni.conf_dir(),
                    "binDirs": self.cni.bin_dirs(),
                });
                match self.cni.network() {
                    Ok(network) => {
                        cni["configFile"] = serde_json::json!(network.file);
                        cni["network"] = network.name.clone().into();
                        cni["cniVersion"] = network.cni_version.clone().into();
                        cni["plugins"] = network.plugin_types().collect::<Vec<_>>().into();
                    }
                    Err(err) => cni["error"] = err.to_string().into(),
                }
                cni
            }
            Attach::LoopbackOnly => serde_json::json!({ "mode": "none" }),
        };
        described["configuredMode"] = configured;
        described
    }

    /// Where the namespace of `sandbox_id` is pinned.
    pub fn netns_path(&self, sandbox_id: &str) -> PathBuf {
        self.netns_dir.join(sandbox_id)
    }

    /// A TCP connection to `port` on the loopback of pod `sandbox_id`'s namespace (IPv4,
    /// else IPv6), for port forwarding; blocks for up to [`POD_CONNECT_TIMEOUT`]. The
    /// socket is made in the namespace and stays there, whatever thread uses it next.
    pub fn connect_in_pod(&self, sandbox_id: &str, port: u16) -> Result<TcpStream, NetworkError> {
        let path = self.netns_path(sandbox_id);
        netns::on_own_thread(move || {
            netns::enter(&path)?;
            connect_to_loopback(port)
        })
    }

    /// Creates the pod's namespace and connects it; a CNI network with a port mapping
    /// plugin gets the pod's host ports. On failure nothing is left.
    pub fn set_up(
        &self,
        sandbox_id: &str,
        pod: &PodIdentity,
        port_mappings: &[PortMapping],
    ) -> Result<PodAttachment, NetworkError> {
        let netns = self.netns_path(sandbox_id);
        netns::create(&netns)?;
        let connected = match self.attach() {
            Attach::LoopbackOnly => Ok(Vec::new()),
            Attach::Bridge => self.connect(sandbox_id, &netns),
            Attach::Cni => self
                .cni
                .add(sandbox_id, &netns, pod, port_mappings)
                .map(|ip| ip.map(IpAddr::V4).into_iter().collect())
                .map_err(NetworkError::from),
        };
        match connected {
            Ok(addresses) => Ok(PodAttachment {
                netns,
                ip: addresses.iter().find_map(|address| match address {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                }),
                ip6: addresses.iter().find_map(|address| match address {
                    IpAddr::V6(v6) => Some(*v6),
                    IpAddr::V4(_) => None,
                }),
            }),
            Err(err) => {
                if let Err(cleanup) = netns::remove(&netns) {
                    tracing::warn!(sandbox = %sandbox_id, "cannot remove the network namespace: {cleanup}");
                }
                Err(err)
            }
        }
    }

    /// Allocates the pod an address in every subnet and attaches it to the bridge.
    fn connect(&self, sandbox_id: &str, netns: &Path) -> Result<Vec<IpAddr>, NetworkError> {
        if self.bridge_not_ready().is_some() {
            // The bridge may have been deleted or failed at start: try once more.
            if let Some(reason) = self.prepare_bridge() {
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

    /// Relays the pod's host ports to `ip`, unless a plugin of its CNI network maps
    /// them. Must run inside the tokio runtime.
    pub fn open_ports(
        &self,
        sandbox_id: &str,
        ip: Ipv4Addr,
        mappings: &[PortMapping],
    ) -> Result<(), NetworkError> {
        if mappings.is_empty() || self.cni.maps_ports(sandbox_id) {
            return Ok(());
        }
        self.proxies.open(sandbox_id, ip, mappings)
    }

    /// Releases what connects the pod (host ports, then its CNI attachment or its veth
    /// and address); its namespace stays until [`PodNetwork::remove_netns`]. Idempotent.
    pub fn tear_down(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        self.proxies.close(sandbox_id);
        self.cni.del(sandbox_id, &self.netns_path(sandbox_id))?;
        if matches!(self.mode, NetworkMode::Bridge | NetworkMode::Auto) {
            netlink::delete_link(&host_veth(sandbox_id))?;
        }
        self.release_addresses(sandbox_id)
    }

    /// Asks the CNI plugins whether the pod's network is as its ADD left it (CNI CHECK);
    /// pods on the bridge, and networks without CHECK, pass.
    pub fn check(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        Ok(self.cni.check(sandbox_id, &self.netns_path(sandbox_id))?)
    }

    /// Unpins the pod's namespace. Idempotent.
    pub fn remove_netns(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        netns::remove(&self.netns_path(sandbox_id))
    }

    /// Frees the namespaces, CNI attachments and addresses of pods that no record knows:
    /// what a criusd killed in the middle of RunPodSandbox left behind.
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
        for sandbox in self.cni.attached() {
            if !known.contains(&sandbox) {
                tracing::info!(%sandbox, "deleting the CNI attachment of an unknown pod");
                if let Err(err) = self.cni.del(&sandbox, &self.netns_path(&sandbox)) {
                    tracing::warn!(%sandbox, "{err}");
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

    fn lock_bridge_not_ready(&self) -> std::sync::MutexGuard<'_, Option<Option<String>>> {
        self.bridge_not_ready
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

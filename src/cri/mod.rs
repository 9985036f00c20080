//! The CRI gRPC services: kubelet's and crictl's way into crius.
//!
//! - [`api`]: types and service traits generated from `proto/cri/api.proto` (runtime.v1).
//! - [`crius_api`]: crius's own API for its CLI (`proto/crius/v1/images.proto`).
//! - [`service`]: the only trait implementations. Each RPC goes through one wrapper that
//!   opens a span, logs the outcome and maps [`CriError`] to a gRPC status; the RPC's
//!   work is a method of [`Cri`] in the file of its group (`runtime_info`, later
//!   `sandbox_run`, `container_create`, `image_pull`, ...).
//! - [`client`]: a client for the same socket, shared by the CLI, tests and benchmarks.

pub mod api;
pub mod client;
mod container_create;
mod container_exec;
mod container_log;
mod container_start;
mod container_stats;
mod container_status;
mod container_stop;
mod container_stream;
pub mod crius_api;
mod error;
mod image_archive;
mod image_pull;
mod image_query;
mod image_remove;
mod image_volume;
mod pod_shims;
mod recovery;
mod rollback;
mod runtime_info;
mod sandbox_run;
mod sandbox_status;
mod sandbox_stop;
pub mod service;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::image::ImageManager;
use crate::network::PodNetwork;
use crate::runtime::HostContext;
use crate::shim::manager::ShimManager;
use crate::store::{ContainerRecord, RecordStore, SandboxRecord};
use crate::streaming::PendingRequests;
use pod_shims::PodShims;

pub use error::CriError;

/// Name reported as `runtime_name` by Version, and by `crictl version`.
pub const RUNTIME_NAME: &str = "crius";
/// The CRI API version crius serves.
pub const RUNTIME_API_VERSION: &str = "v1";

/// Everything the RPCs work on. One instance per daemon, shared by both gRPC services.
pub struct Cri {
    config: Config,
    images: Arc<ImageManager>,
    /// Pod CIDR(s) kubelet last sent through UpdateRuntimeConfig; empty until then.
    pod_cidr: Mutex<String>,
    /// Shared with the exit watchers, which mark a pod whose shim died NOTREADY.
    sandboxes: Arc<RecordStore<SandboxRecord>>,
    /// Shared with the exit watchers, which record exits as they happen.
    containers: Arc<RecordStore<ContainerRecord>>,
    shims: PodShims,
    /// Pod network namespaces, addresses and host ports; shared with blocking threads.
    network: Arc<PodNetwork>,
    /// What containers may have on this node (capabilities, cgroup version).
    host: HostContext,
    /// Held while a pod or container name is checked and claimed, so that two requests
    /// for the same name cannot both succeed.
    names: tokio::sync::Mutex<()>,
    /// The streaming server's pending sessions, which Exec and PortForward add to.
    streaming: Arc<PendingRequests>,
}

/// The image an image RPC names (`image.image`), which must not be empty; recorded as
/// the RPC span's `name`.
fn requested_image(spec: Option<&api::ImageSpec>) -> Result<&str, CriError> {
    let image = spec
        .map(|spec| spec.image.as_str())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| CriError::invalid("image.image", "is required"))?;
    tracing::Span::current().record("name", image);
    Ok(image)
}

impl Cri {
    /// Opens the stores under the config's root and recovers from an unclean stop:
    /// reconnects to the shims that outlived the previous criusd and picks up their
    /// containers' exits. Starts receiving the shims' task events, recording container
    /// exits from them as they come.
    /// Exec and PortForward sessions are left in `streaming` for the streaming server.
    pub async fn open(config: Config, streaming: Arc<PendingRequests>) -> Result<Cri, CriError> {
        let images = ImageManager::open(&config).await?;
        let shim_binary = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("crius-shim")))
            .unwrap_or_else(|| PathBuf::from("crius-shim"));
        let host = HostContext {
            capabilities: crate::runtime::host_capabilities().map_err(|err| {
                CriError::Internal {
                    what: "reading the host's capabilities",
                    reason: err.to_string(),
                }
            })?,
            cgroup_v2: std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            ..HostContext::default()
        };
        let subnets: Vec<_> = std::iter::once(config.network.subnet())
            .chain(config.network.subnet6().transpose())
            .collect::<Result<_, _>>()
            .map_err(|reason| CriError::invalid("network", reason))?;
        let network = Arc::new(PodNetwork::new(
            &config.network,
            &subnets,
            &config.state,
            &config.root,
        ));
        let preparing = network.clone();
        tokio::task::spawn_blocking(move || preparing.prepare())
            .await
            .map_err(|_| CriError::Internal {
                what: "preparing the pod network",
                reason: "the preparing thread panicked".to_string(),
            })?;
        let shims = ShimManager::new(&shim_binary, &config.state)?;
        let task_events = shims.events().subscribe();
        let cri = Cri {
            network,
            sandboxes: Arc::new(RecordStore::open(&config.root.join("pods/sandboxes"))?),
            containers: Arc::new(RecordStore::open(&config.root.join("pods/containers"))?),
            shims: PodShims::new(shims),
            host,
            names: tokio::sync::Mutex::new(()),
            streaming,
            config,
            images,
            pod_cidr: Mutex::new(String::new()),
        };
        pod_shims::record_task_exits(task_events, cri.containers.clone());
        cri.recover();
        Ok(cri)
    }

    /// Stops what serves beside the CRI: the shims' events socket (criusd's shutdown).
    pub fn stop(&self) {
        self.shims.stop_events();
    }

    /// Runtime files of a sandbox: hostname, hosts, resolv.conf, shm.
    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.config.state.join("sandboxes").join(id)
    }

    /// A container's OCI bundle (config.json, rootfs mount point).
    fn bundle_dir(&self, id: &str) -> PathBuf {
        self.config.state.join("containers").join(id)
    }

    /// A container's writable layer (overlay upper and work directories).
    fn layer_dir(&self, id: &str) -> PathBuf {
        self.config.root.join("layers").join(id)
    }
}

/// Nanoseconds since the epoch, as the CRI's timestamps are.
fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos() as i64)
        .unwrap_or_default()
}

/// A new 64-hex-digit id for a sandbox or container, from the kernel's random source.
fn new_id() -> Result<String, CriError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(|err| CriError::Internal {
            what: "reading /dev/urandom for an id",
            reason: err.to_string(),
        })?;
    Ok(hex::encode(bytes))
}

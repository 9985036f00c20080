//! Shims: one supervisor process per pod sandbox that runs its containers and outlives
//! criusd.
//!
//! Both sides speak containerd's shim v2 protocol, so that criusd can drive another shim
//! v2 binary (containerd-shim-runc-v2) and containerd could drive `crius-shim`:
//! - [`command_line`]: the shim command line (`-namespace -address -publish-binary -id
//!   start|delete`, Go flag syntax) with crius's pod options;
//! - [`task_api`]: the Task service under its v2 and v3 names, and a client for either;
//! - [`events`]: task events published by shims and received by criusd;
//! - [`stdio_uri`]: stdio as paths and `file://` URIs.
//!
//! The shim side (`crius-shim`):
//! - [`task`]: containerd's shim v2 Task service over ttrpc (create, start, kill, wait,
//!   state, delete, shutdown), publishing task events.
//! - [`reaper`]: the subreaper that collects every exit exactly once.
//! - [`resident`]: giving back the shim's resident code pages while it idles.
//! - [`runc`]: containers run through an OCI runtime with runc's command line and a
//!   private `--root`: a runtime handler's binary, or [`embedded`].
//! - [`embedded`]: `crius-oci`, crius's own OCI runtime (libcontainer), which the shim runs
//!   as it runs runc.
//! - [`cri_log`]: container output written in the CRI log format.
//! - [`process_io`]: a process's stdio: pipes or a terminal ([`console`]), and a stdin
//!   fed from a FIFO that CloseIO can close ([`stdin`]).
//! - [`metrics`]: Stats' answer, containerd's cgroup metrics.
//! - [`daemon`]: `crius-shim … start`: fork the shim daemon, bind its socket, serve;
//!   `… delete`: clean up after a dead one.
//! - [`pid_namespace`]: the init that holds a pod's shared PID namespace.
//!
//! The daemon side:
//! - [`launcher`]: runs any shim v2 binary the way containerd does and connects to it;
//! - [`manager`]: starts crius's pod shims, connects (and reconnects after a criusd
//!   restart) to them, and serves the events they publish.

pub mod command_line;
pub mod console;
pub mod cri_log;
pub mod daemon;
pub mod embedded;
pub mod events;
pub mod launcher;
pub mod manager;
pub mod metrics;
pub mod pid_namespace;
pub mod process_io;
pub mod reaper;
pub mod resident;
pub mod runc;
pub mod stdin;
pub mod stdio_uri;
pub mod task;
pub mod task_api;

use containerd_shim_protos::ttrpc;
use nix::errno::Errno;

/// Why a shim operation failed. Converted to ttrpc statuses in exactly one place.
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("cannot {what}: {source}")]
    Sys { what: &'static str, source: Errno },
    #[error("runc {command} failed: {message}")]
    Runtime {
        command: &'static str,
        message: String,
    },
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// The message names the container (and exec); it travels unchanged over ttrpc.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("cannot encode or decode {what}: {source}")]
    Protobuf {
        what: &'static str,
        source: containerd_shim_protos::protobuf::Error,
    },
    #[error("the reaper thread is gone")]
    ReaperGone,
    #[error("shim {socket}: {source}")]
    Rpc {
        socket: String,
        source: ttrpc::Error,
    },
}

impl From<ShimError> for ttrpc::Error {
    fn from(err: ShimError) -> ttrpc::Error {
        let code = match &err {
            ShimError::InvalidArgument(_) => ttrpc::Code::INVALID_ARGUMENT,
            ShimError::NotFound(_) => ttrpc::Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
            ShimError::FailedPrecondition(_) => ttrpc::Code::FAILED_PRECONDITION,
            _ => ttrpc::Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, err.to_string()))
    }
}

/// The outcome of removing a file or directory, one that was not there counting as
/// removed; `what` says what was being removed.
fn removed(result: std::io::Result<()>, what: &'static str) -> Result<(), ShimError> {
    match result {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(ShimError::Io { what, source })
        }
        _ => Ok(()),
    }
}

//! The verbs of the `crius` command line client. Each verb connects to the daemon's CRI
//! socket exactly as kubelet or crictl would and returns what the binary prints.
//!
//! - `runtime_info`: `crius version`, `crius info`.
//! - `images`: `crius pull`, `images`, `rmi`, `inspect`, `load`, `save`.

mod images;
mod runtime_info;

pub use images::{images, inspect, load, pull, rmi, save};
pub use runtime_info::{info, version};

use crate::cri::client::ClientError;

/// Why a verb failed; printed by the binary as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{rpc} failed: {}: {}", .status.code(), .status.message())]
    Rpc {
        rpc: &'static str,
        status: tonic::Status,
    },
    #[error("{rpc}: unexpected answer: {detail}")]
    Protocol { rpc: &'static str, detail: String },
    #[error("no such image: {0}")]
    NoSuchImage(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
}

/// Attaches the RPC's name to a failed call.
fn rpc_error(rpc: &'static str) -> impl FnOnce(tonic::Status) -> CliError {
    move |status| CliError::Rpc { rpc, status }
}

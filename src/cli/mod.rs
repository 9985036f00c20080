//! The verbs of the `crius` command line client. Each verb connects to the daemon's CRI
//! socket exactly as kubelet or crictl would and returns what the binary prints.
//!
//! - [`runtime_info`]: `crius version`, `crius info`.

mod runtime_info;

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
}

/// Attaches the RPC's name to a failed call.
fn rpc_error(rpc: &'static str) -> impl FnOnce(tonic::Status) -> CliError {
    move |status| CliError::Rpc { rpc, status }
}

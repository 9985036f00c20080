//! The errors a CRI RPC can end with. `service.rs` maps each kind to exactly one gRPC code;
//! messages name the RPC, object or request field involved.

use tonic::Code;

use crate::image::ImageError;
use crate::network::{CniError, NetworkError};
use crate::runtime::SpecError;
use crate::shim::ShimError;
use crate::snapshot::SnapshotError;
use crate::store::{AmbiguousPrefix, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The RPC is part of the API but its capability has not landed in crius yet.
    #[error("{rpc} is not implemented by crius yet")]
    Unimplemented { rpc: &'static str },
    /// A request field is missing or malformed; `field` is its path in the request.
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error(transparent)]
    Image(#[from] ImageError),
    /// `kind` is "pod sandbox" or "container".
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} name {name:?} is already in use by {id}")]
    AlreadyExists {
        kind: &'static str,
        name: String,
        id: String,
    },
    /// The object is not in a state that allows the request.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request's own deadline passed (an ExecSync timeout).
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error(transparent)]
    Ambiguous(#[from] AmbiguousPrefix),
    /// The container config cannot become a runtime spec; the message names the field.
    #[error("invalid container config: {0}")]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Shim(#[from] ShimError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// crius failed at something the request did not cause; `what` says what it was doing.
    #[error("internal error while {what}: {reason}")]
    Internal { what: &'static str, reason: String },
}

impl CriError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> CriError {
        CriError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// The gRPC code kubelet sees for this error.
    pub fn code(&self) -> tonic::Code {
        match self {
            CriError::Unimplemented { .. } => Code::Unimplemented,
            CriError::InvalidArgument { .. } => Code::InvalidArgument,
            CriError::Internal { .. } => Code::Internal,
            CriError::Image(err) => image_code(err),
            CriError::NotFound { .. } => Code::NotFound,
            CriError::AlreadyExists { .. } => Code::AlreadyExists,
            CriError::FailedPrecondition(_) => Code::FailedPrecondition,
            CriError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            CriError::Ambiguous(_) | CriError::Spec(_) => Code::InvalidArgument,
            CriError::Shim(err) => match err {
                ShimError::NotFound(_) => Code::NotFound,
                ShimError::AlreadyExists(_) => Code::AlreadyExists,
                ShimError::InvalidArgument(_) => Code::InvalidArgument,
                ShimError::FailedPrecondition(_) => Code::FailedPrecondition,
                _ => Code::Internal,
            },
            CriError::Network(err) => match err {
                NetworkError::SubnetExhausted { .. } => Code::ResourceExhausted,
                NetworkError::HostPort { .. } | NetworkError::NotReady(_) => {
                    Code::FailedPrecondition
                }
                NetworkError::Cni(err) => cni_code(err),
                _ => Code::Internal,
            },
            CriError::Store(_) | CriError::Snapshot(_) => Code::Internal,
        }
    }
}

/// A missing or broken CNI setup is the node's state, not a fault of crius: kubelet
/// retries once the operator fixed it. A failed ADD undone is judged by its first error.
fn cni_code(err: &CniError) -> Code {
    match err {
        CniError::Config(_) | CniError::PluginNotFound { .. } => Code::FailedPrecondition,
        CniError::PodIdentity { .. } => Code::InvalidArgument,
        CniError::TimedOut { .. } => Code::DeadlineExceeded,
        CniError::Undo { error, .. } => cni_code(error),
        CniError::Plugin { .. }
        | CniError::BadResult { .. }
        | CniError::Exec { .. }
        | CniError::Cache(_) => Code::Internal,
    }
}

fn image_code(err: &ImageError) -> Code {
    match err {
        ImageError::InvalidReference(_)
        | ImageError::InvalidCredentials { .. }
        | ImageError::BadArchive { .. } => Code::InvalidArgument,
        ImageError::NotFound { .. } | ImageError::NoMatchingPlatform { .. } => Code::NotFound,
        ImageError::Unauthorized { .. } => Code::Unauthenticated,
        ImageError::Unavailable { .. } => Code::Unavailable,
        ImageError::Stalled { .. } => Code::DeadlineExceeded,
        // The registry served bytes that are not what the image promises.
        ImageError::BadContent { .. } => Code::DataLoss,
        _ if err.is_out_of_space() => Code::ResourceExhausted,
        ImageError::Content(_)
        | ImageError::Snapshot(_)
        | ImageError::Store(_)
        | ImageError::Task(_) => Code::Internal,
    }
}

//! Why a benchmark run stopped. Any of these ends the run: a number measured on a
//! runtime that misbehaved (an image that did not go away, a call that failed) would be
//! a wrong number, so the harness reports the fault instead of skipping the sample.

use std::path::PathBuf;
use std::time::Duration;

use crius::cri::client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{runtime}: {source}")]
    Connect {
        runtime: &'static str,
        source: ClientError,
    },
    // Boxed: a tonic Status is large, and this error travels through every call.
    #[error("{runtime}: {call} failed: {status}")]
    Rpc {
        runtime: &'static str,
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("{runtime}: {call} did not answer within {limit:?}")]
    Timeout {
        runtime: &'static str,
        call: &'static str,
        limit: Duration,
    },
    #[error("{runtime}: {image} is still listed after RemoveImage")]
    StillPresent {
        runtime: &'static str,
        image: String,
    },
    #[error("{runtime}: ImageStatus does not find {image} after PullImage")]
    NotPulled {
        runtime: &'static str,
        image: String,
    },
    #[error(
        "{runtime}: {root} holds {bytes} bytes after {image} was removed, {baseline} before \
         it was first pulled: its content was not deleted, so the next pull would not be cold"
    )]
    ContentLeft {
        runtime: &'static str,
        image: String,
        root: PathBuf,
        bytes: u64,
        baseline: u64,
    },
    #[error("{runtime}: ListImages lists {listed} images, but {present} were just found present")]
    ListedTooFew {
        runtime: &'static str,
        listed: usize,
        present: usize,
    },
    #[error("{scenario} needs the daemon's pid: pass --{runtime}-pid")]
    MissingPid {
        scenario: &'static str,
        runtime: &'static str,
    },
    #[error("{runtime}: ExecSync exited {exit_code}")]
    ExecFailed {
        runtime: &'static str,
        exit_code: i32,
    },
    #[error("{runtime}: the verbose PodSandboxStatus of {pod} names no pid")]
    NoPodPid { runtime: &'static str, pod: String },
    #[error("{scenario} needs --pod-image (an image with sh and sleep)")]
    NoPodImage { scenario: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no {field} line")]
    ProcField { path: PathBuf, field: &'static str },
}

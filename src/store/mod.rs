//! Crash-safe persistent state: metadata records kept as one JSON file each, written
//! atomically, with an in-memory index in front.
//!
//! - [`atomic`]: write-temp, fsync, rename, fsync-directory — the one way state is written.
//! - [`records`]: a generic persistent record set, used for sandboxes and containers.
//! - [`images`]: image records (id, names, layers) keyed by config digest.
//! - [`sandboxes`], [`containers`]: pod and container records and their state machines.

pub mod atomic;
pub mod containers;
pub mod images;
pub mod records;
pub mod sandboxes;

pub use containers::{ContainerRecord, ContainerState, MountRecord};
pub use images::{ImageRecord, ImageStore};
pub use records::{AmbiguousPrefix, RecordStore};
pub use sandboxes::{SandboxRecord, SandboxState};

/// A state file that could not be read or written; names the path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt state file {path}: {source}")]
    Corrupt {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
}

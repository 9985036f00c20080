//! Crash-safe persistent state: metadata records kept as one JSON file each, written
//! atomically, with an in-memory index in front.
//!
//! - [`atomic`]: write-temp, fsync, rename, fsync-directory — the one way state is written.
//! - [`images`]: image records (id, names, layers) keyed by config digest.

pub mod atomic;
pub mod images;

pub use images::{ImageRecord, ImageStore};

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

//! Images: pulling from registries into the content store and snapshots, and the image
//! records kubelet lists, inspects and removes.
//!
//! - [`reference`]: image names, normalised as Docker and kubelet do.
//! - [`registry`]: endpoints (mirrors, insecure registries, credentials) and fetching.
//! - [`manifest`]: manifests, indexes, configs, platform choice.
//! - [`content`]: verified blobs by digest.
//! - [`pull`]: the pull pipeline: resolve, download layers in parallel, unpack, record.
//! - [`progress`]: per-layer pull progress for the CLI.
//! - [`gc`]: removal of blobs and snapshots that no image references.
//! - `archive`: `crius save` / `crius load` tarballs (OCI layout and docker save).
//!
//! Consistency rule: an image record is written only after all of its blobs and
//! snapshots exist, and blobs and snapshots are only deleted by garbage collection,
//! which runs while no pull is in flight. So a record always means a usable image, and
//! a crash at any moment leaves at most unreferenced data that the next start removes.

mod archive;
pub mod content;
mod gc;
pub mod manifest;
pub mod progress;
mod pull;
pub mod reference;
pub mod registry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::config::Config;
use crate::snapshot::{SnapshotError, Snapshotter};
use crate::store::{ImageRecord, ImageStore, StoreError};
use content::{ContentError, ContentStore};
use reference::{Reference, ReferenceError};
use registry::{FetchError, Registries};

pub use registry::Credentials;

/// Why an image operation failed. The CRI layer maps each variant to one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    #[error("image {image} not found: {detail}")]
    NotFound { image: String, detail: String },
    #[error("pulling {image}: {source}")]
    Unauthorized { image: String, source: FetchError },
    #[error("pulling {image}: {source}")]
    InvalidCredentials { image: String, source: FetchError },
    #[error("pulling {image}: no registry endpoint could serve it: {detail}")]
    Unavailable { image: String, detail: String },
    #[error("pulling {image}: {source}")]
    Stalled { image: String, source: FetchError },
    #[error("pulling {image}: {detail}")]
    BadContent { image: String, detail: String },
    #[error("bad image archive: {detail}")]
    BadArchive { detail: String },
    #[error("image {image} has no variant for platform {platform}")]
    NoMatchingPlatform { image: String, platform: String },
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0} task failed")]
    Task(&'static str),
}

impl ImageError {
    /// True when the node's disk (or its inodes) ran out while writing.
    pub fn is_out_of_space(&self) -> bool {
        let io = match self {
            ImageError::Content(ContentError::Io { source, .. }) => source,
            ImageError::Snapshot(SnapshotError::Io { source, .. }) => source,
            ImageError::Store(StoreError::Io { source, .. }) => source,
            _ => return false,
        };
        io.kind() == std::io::ErrorKind::StorageFull
    }
}

/// Bytes and inodes used by a part of the image filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// The image half of crius: content, snapshots, records and registries.
pub struct ImageManager {
    root: PathBuf,
    /// Shared with blocking tasks that import archive blobs.
    content: Arc<ContentStore>,
    /// Shared with blocking tasks that unpack and delete layers.
    snapshots: Arc<Snapshotter>,
    store: ImageStore,
    registries: Registries,
    max_concurrent_downloads: usize,
    /// Pulls hold it shared; garbage collection holds it exclusively, so it never
    /// deletes what an in-flight pull has written but not yet recorded.
    gc_lock: tokio::sync::RwLock<()>,
    /// One lock per layer being fetched, so concurrent pulls that share a layer download
    /// and unpack it once (single-flight); entries vanish when the last holder drops.
    layer_locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl ImageManager {
    /// Opens the stores under `config.root`, forgets records whose data is missing, and
    /// removes whatever an interrupted pull left behind.
    pub async fn open(config: &Config) -> Result<Arc<ImageManager>, ImageError> {
        let root = &config.root;
        let manager = ImageManager {
            root: root.clone(),
            content: Arc::new(ContentStore::open(root)?),
            snapshots: Arc::new(Snapshotter::new(root)?),
            store: ImageStore::open(root)?,
            registries: Registries::new(
                &config.registries,
                Duration::from_secs(config.image.pull_progress_timeout_secs),
            ),
            max_concurrent_downloads: config.image.max_concurrent_downloads,
            gc_lock: tokio::sync::RwLock::new(()),
            layer_locks: Mutex::new(HashMap::new()),
        };
        manager.drop_incomplete_records()?;
        let manager = Arc::new(manager);
        manager.collect_garbage().await?;
        Ok(manager)
    }

    /// The directory holding blobs and snapshots: the image filesystem of ImageFsInfo.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.store.list()
    }

    /// Finds an image by id, unique id prefix, `name:tag` or `name@digest` (short names
    /// are normalised: `busybox` finds `docker.io/library/busybox:latest`).
    pub fn find(&self, key: &str) -> Option<ImageRecord> {
        let names = Reference::parse(key)
            .map(|reference| {
                let mut names = Vec::new();
                if let Some(digest) = reference.digest() {
                    names.push(reference.with_digest(digest));
                } else if let Some(tagged) = reference.tagged() {
                    names.push(tagged);
                }
                names
            })
            .unwrap_or_default();
        self.store.find(key, &names)
    }

    /// A fresh scratch directory on the store's filesystem (for an uploaded archive);
    /// the caller removes it, and the next start clears any left behind.
    pub fn staging_dir(&self) -> Result<PathBuf, ImageError> {
        Ok(self.content.ingest_dir("upload")?)
    }

    /// The unpacked snapshot of a layer chain: an overlay lower directory.
    pub fn snapshot_path(&self, chain_id: &str) -> Result<PathBuf, ImageError> {
        Ok(self.snapshots.path(chain_id)?)
    }

    /// The image's filesystem as overlay lower directories: its layers' snapshots,
    /// topmost first.
    pub fn image_lowers(&self, image: &ImageRecord) -> Result<Vec<PathBuf>, ImageError> {
        image
            .layers
            .iter()
            .rev()
            .map(|layer| self.snapshot_path(&layer.chain_id))
            .collect()
    }

    /// The image's config blob, as the registry served it.
    pub async fn config_bytes(&self, image: &ImageRecord) -> Result<Vec<u8>, ImageError> {
        Ok(self.content.read(&image.id).await?)
    }

    /// Removes the image that `key` names, with all of its names, and collects its data.
    /// Returns the removed record; `None` when there was no such image (not an error).
    pub async fn remove(&self, key: &str) -> Result<Option<ImageRecord>, ImageError> {
        let Some(image) = self.find(key) else {
            return Ok(None);
        };
        let removed = self.store.remove(&image.id)?;
        self.collect_garbage().await?;
        Ok(removed)
    }

    /// Usage of the image filesystem: blobs plus unpacked snapshots.
    pub fn usage(&self) -> Usage {
        let (blob_bytes, blob_inodes) = self.content.usage();
        let mut usage = Usage {
            bytes: blob_bytes,
            inodes: blob_inodes,
        };
        for chain_id in self.snapshots.list().unwrap_or_default() {
            if let Ok(layer) = self.snapshots.usage(&chain_id) {
                usage.bytes += layer.bytes;
                usage.inodes += layer.inodes;
            }
        }
        usage
    }

    /// Drops records whose config, manifest or snapshots are missing: such an image could
    /// not run, and kubelet must see it as absent so that it pulls it again.
    fn drop_incomplete_records(&self) -> Result<(), ImageError> {
        for image in self.store.list() {
            let complete = self.content.contains(&image.id)
                && self.content.contains(&image.manifest_digest)
                && image
                    .layers
                    .iter()
                    .all(|layer| self.snapshots.exists(&layer.chain_id));
            if !complete {
                tracing::warn!(image = %image.id, "forgetting image whose data is incomplete");
                self.store.remove(&image.id)?;
            }
        }
        Ok(())
    }

    fn layer_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .layer_locks
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        locks.retain(|_, lock| lock.strong_count() > 0);
        if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.to_string(), Arc::downgrade(&lock));
        lock
    }
}

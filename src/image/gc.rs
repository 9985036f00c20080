//! Garbage collection: deletes blobs and snapshots that no image record references.
//!
//! Runs under the exclusive GC lock, so no pull is between writing data and recording
//! the image that references it.

use std::collections::HashSet;

use super::{ImageError, ImageManager};

impl ImageManager {
    /// Removes unreferenced blobs and snapshots; returns how many of each it removed.
    pub async fn collect_garbage(&self) -> Result<(usize, usize), ImageError> {
        let _exclusive = self.gc_lock.write().await;
        let mut blobs: HashSet<String> = HashSet::new();
        let mut snapshots: HashSet<String> = HashSet::new();
        for image in self.store.list() {
            blobs.insert(image.id.clone());
            blobs.insert(image.manifest_digest.clone());
            for name in &image.repo_digests {
                if let Some((_, digest)) = name.rsplit_once('@') {
                    blobs.insert(digest.to_string());
                }
            }
            for layer in &image.layers {
                blobs.insert(layer.digest.clone());
                snapshots.insert(layer.chain_id.clone());
            }
        }
        let mut removed_blobs = 0;
        for digest in self.content.list()? {
            if !blobs.contains(&digest) {
                self.content.remove(&digest)?;
                removed_blobs += 1;
            }
        }
        let mut removed_snapshots = 0;
        for chain_id in self.snapshots.list()? {
            if !snapshots.contains(&chain_id) {
                let snapshots = self.snapshots.clone();
                tokio::task::spawn_blocking(move || snapshots.remove(&chain_id))
                    .await
                    .map_err(|_| ImageError::Task("snapshot removal"))??;
                removed_snapshots += 1;
            }
        }
        if removed_blobs + removed_snapshots > 0 {
            tracing::info!(removed_blobs, removed_snapshots, "garbage collected");
        }
        Ok((removed_blobs, removed_snapshots))
    }
}

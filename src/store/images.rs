//! Image records: what `ListImages` and `ImageStatus` report, and which blobs and
//! snapshots an image holds.
//!
//! One JSON file per image under `<root>/images/<config-digest-hex>.json`, written
//! atomically and only after every layer of the image is unpacked, so a record on disk
//! always means a usable image. A tag names at most one image: putting an image with a
//! tag takes the tag away from the image that had it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use super::{atomic, StoreError};

/// Shortest hex prefix accepted as an image id abbreviation (as Docker does).
const MIN_ID_PREFIX: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Digest of the image config (`sha256:…`): the image's identity for kubelet.
    pub id: String,
    /// `registry/repository:tag` names.
    pub repo_tags: Vec<String>,
    /// `registry/repository@sha256:…` names; the digest is what the registry served for
    /// the reference (an index digest for multi-platform images).
    pub repo_digests: Vec<String>,
    /// Digest of the platform-specific manifest whose layers these are.
    pub manifest_digest: String,
    /// Media type of that manifest (OCI or Docker schema 2).
    pub manifest_media_type: String,
    /// Compressed size of config and layers: what a pull transfers.
    pub size: u64,
    pub layers: Vec<LayerRecord>,
    /// The config's `User` (empty for root by default).
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the compressed blob.
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    /// Digest of the uncompressed tar (config `rootfs.diff_ids`).
    pub diff_id: String,
    /// Chain ID: the snapshot holding this layer applied on its parents.
    pub chain_id: String,
}

impl ImageRecord {
    /// The id without its `sha256:` prefix.
    pub fn id_hex(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }
}

/// The set of images, indexed in memory and persisted one file per image.
pub struct ImageStore {
    dir: PathBuf,
    images: RwLock<BTreeMap<String, ImageRecord>>,
}

impl ImageStore {
    /// Loads every record under `<root>/images`. Unreadable records are skipped with a
    /// warning rather than keeping the daemon from starting.
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        let dir = root.join("images");
        std::fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let entries = std::fs::read_dir(&dir).map_err(|source| StoreError::Io {
            action: "list",
            path: dir.clone(),
            source,
        })?;
        let mut images = BTreeMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            match read_record(&path) {
                Ok(record) => {
                    images.insert(record.id.clone(), record);
                }
                Err(err) => tracing::warn!("skipping image record: {err}"),
            }
        }
        Ok(ImageStore {
            dir,
            images: RwLock::new(images),
        })
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.read().values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<ImageRecord> {
        self.read().get(id).cloned()
    }

    /// Finds an image by id (`sha256:…` or bare hex), by name (`repo:tag` or
    /// `repo@digest`, already normalised by the caller into `names`), or by a unique id
    /// prefix of at least four hex digits.
    pub fn find(&self, key: &str, names: &[String]) -> Option<ImageRecord> {
        let images = self.read();
        let bare = key.strip_prefix("sha256:").unwrap_or(key);
        if let Some(image) = images.get(&format!("sha256:{bare}")) {
            return Some(image.clone());
        }
        let by_name = images.values().find(|image| {
            names
                .iter()
                .any(|name| image.repo_tags.contains(name) || image.repo_digests.contains(name))
        });
        if let Some(image) = by_name {
            return Some(image.clone());
        }
        if bare.len() >= MIN_ID_PREFIX && bare.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matches = images
                .values()
                .filter(|image| image.id_hex().starts_with(bare));
            if let (Some(image), None) = (matches.next(), matches.next()) {
                return Some(image.clone());
            }
        }
        None
    }

    /// Records `record`, merging names into an existing record with the same id and taking
    /// its tags away from any other image. Returns the stored record.
    pub fn put(&self, mut record: ImageRecord) -> Result<ImageRecord, StoreError> {
        let mut images = self.write();
        if let Some(existing) = images.get(&record.id) {
            merge_names(&mut record.repo_tags, &existing.repo_tags);
            merge_names(&mut record.repo_digests, &existing.repo_digests);
        }
        let others: Vec<String> = images
            .values()
            .filter(|other| {
                other.id != record.id
                    && other.repo_tags.iter().any(|t| record.repo_tags.contains(t))
            })
            .map(|other| other.id.clone())
            .collect();
        for id in others {
            if let Some(other) = images.get_mut(&id) {
                other
                    .repo_tags
                    .retain(|tag| !record.repo_tags.contains(tag));
                self.persist(other)?;
            }
        }
        self.persist(&record)?;
        images.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    /// Forgets the image `id`; forgetting an unknown id is not an error.
    pub fn remove(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        let mut images = self.write();
        let Some(record) = images.get(id) else {
            return Ok(None);
        };
        atomic::remove_file(&self.path(record))?;
        atomic::sync_dir(&self.dir).map_err(|source| StoreError::Io {
            action: "fsync",
            path: self.dir.clone(),
            source,
        })?;
        Ok(images.remove(id))
    }

    fn persist(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Corrupt {
            path: self.path(record),
            source,
        })?;
        atomic::write_file(&self.path(record), &bytes)
    }

    fn path(&self, record: &ImageRecord) -> PathBuf {
        self.dir.join(format!("{}.json", record.id_hex()))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ImageRecord>> {
        self.images
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, ImageRecord>> {
        self.images
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn merge_names(names: &mut Vec<String>, previous: &[String]) {
    for name in previous {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names.sort();
}

fn read_record(path: &Path) -> Result<ImageRecord, StoreError> {
    let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id_char: char, tags: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id_char.to_string().repeat(64)),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: vec![],
            manifest_digest: String::new(),
            manifest_media_type: String::new(),
            size: 1,
            layers: vec![],
            user: String::new(),
        }
    }

    #[test]
    fn records_survive_reopen_and_are_found_by_id_name_and_prefix() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        store
            .put(record('a', &["docker.io/library/busybox:latest"]))
            .unwrap();
        store
            .put(record('b', &["docker.io/library/other:1"]))
            .unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        assert_eq!(store.list().len(), 2);
        let a = format!("sha256:{}", "a".repeat(64));
        assert_eq!(store.find(&a, &[]).unwrap().id, a);
        assert_eq!(store.find(&"a".repeat(64), &[]).unwrap().id, a);
        assert_eq!(store.find("aaaa", &[]).unwrap().id, a);
        assert!(
            store.find("aaa", &[]).is_none(),
            "prefix shorter than 4 must not match"
        );
        let by_name = store.find("busybox", &["docker.io/library/busybox:latest".into()]);
        assert_eq!(by_name.unwrap().id, a);
        assert!(store
            .find("nothing", &["docker.io/library/nothing:latest".into()])
            .is_none());
    }

    #[test]
    fn a_tag_moves_to_the_newest_image() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        store
            .put(record('a', &["r/app:latest", "r/app:v1"]))
            .unwrap();
        store.put(record('b', &["r/app:latest"])).unwrap();
        let a = store.get(&format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(a.repo_tags, vec!["r/app:v1".to_string()]);
        let reopened = ImageStore::open(root.path()).unwrap();
        assert_eq!(
            reopened.get(&a.id).unwrap().repo_tags,
            vec!["r/app:v1".to_string()]
        );
    }

    #[test]
    fn putting_the_same_image_again_merges_names_and_remove_is_idempotent() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path()).unwrap();
        store.put(record('a', &["r/app:v1"])).unwrap();
        let merged = store.put(record('a', &["r/app:v2"])).unwrap();
        assert_eq!(
            merged.repo_tags,
            vec!["r/app:v1".to_string(), "r/app:v2".to_string()]
        );
        assert!(store.remove(&merged.id).unwrap().is_some());
        assert!(store.remove(&merged.id).unwrap().is_none());
        assert!(ImageStore::open(root.path()).unwrap().list().is_empty());
    }

    #[test]
    fn a_corrupt_record_is_skipped() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("images")).unwrap();
        std::fs::write(root.path().join("images/broken.json"), b"{").unwrap();
        assert!(ImageStore::open(root.path()).unwrap().list().is_empty());
    }
}

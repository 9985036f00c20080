//! The content store: blobs (manifests, configs, layers) by digest under
//! `<root>/content/blobs/sha256/<hex>`.
//!
//! Invariant: a file under `blobs/` always holds exactly the bytes its name promises. New
//! content is written to `<root>/content/ingest/`, hashed while it is written, and only
//! after the size and digest check out is it fsynced and renamed into `blobs/`. A crash
//! leaves at most an ingest file, and `open` clears the ingest directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::reference::validate_digest;

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        digest: String,
        reason: &'static str,
    },
    #[error("blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {expected} has the wrong content: its sha256 is {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {0} is not in the content store")]
    NotFound(String),
}

pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
    /// Makes ingest file names unique within this process (the root lock makes the
    /// process unique).
    next_ingest: AtomicU64,
}

impl ContentStore {
    /// Opens (creating) the store under `root` and discards unfinished ingests.
    pub fn open(root: &Path) -> Result<ContentStore, ContentError> {
        let blobs = root.join("content/blobs/sha256");
        let ingest = root.join("content/ingest");
        if ingest.exists() {
            std::fs::remove_dir_all(&ingest).map_err(|source| ContentError::Io {
                action: "clear",
                path: ingest.clone(),
                source,
            })?;
        }
        for dir in [&blobs, &ingest] {
            std::fs::create_dir_all(dir).map_err(|source| ContentError::Io {
                action: "create",
                path: dir.clone(),
                source,
            })?;
        }
        Ok(ContentStore {
            blobs,
            ingest,
            next_ingest: AtomicU64::new(0),
        })
    }

    /// Where the blob `digest` lives (whether or not it is there yet).
    pub fn path(&self, digest: &str) -> Result<PathBuf, ContentError> {
        let invalid = |reason| ContentError::InvalidDigest {
            digest: digest.to_string(),
            reason,
        };
        validate_digest(digest).map_err(invalid)?;
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| invalid("only sha256 content is stored"))?;
        Ok(self.blobs.join(hex))
    }

    pub fn contains(&self, digest: &str) -> bool {
        self.path(digest).is_ok_and(|path| path.is_file())
    }

    /// Reads a whole blob: for manifests and configs, which are small.
    pub async fn read(&self, digest: &str) -> Result<Vec<u8>, ContentError> {
        let path = self.path(digest)?;
        tokio::fs::read(&path)
            .await
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => ContentError::NotFound(digest.to_string()),
                _ => ContentError::Io {
                    action: "read",
                    path,
                    source,
                },
            })
    }

    /// Stores `bytes` as the blob `digest` after checking them.
    pub async fn write_all(&self, digest: &str, bytes: &[u8]) -> Result<(), ContentError> {
        let mut writer = self.writer(digest, bytes.len() as u64).await?;
        writer.write(bytes).await?;
        writer.commit().await
    }

    /// Starts writing the blob `digest` of `size` bytes.
    pub async fn writer(&self, digest: &str, size: u64) -> Result<BlobWriter, ContentError> {
        let target = self.path(digest)?;
        let number = self.next_ingest.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .ingest
            .join(format!("{}-{number}", digest.trim_start_matches("sha256:")));
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|source| ContentError::Io {
                action: "create",
                path: temp.clone(),
                source,
            })?;
        Ok(BlobWriter {
            file,
            hasher: Sha256::new(),
            written: 0,
            digest: digest.to_string(),
            size,
            temp,
            target,
            committed: false,
        })
    }

    /// A fresh private directory under the ingest area, for content that arrives as
    /// files (an image archive being loaded). Cleared with the rest of ingest at start.
    pub fn ingest_dir(&self, purpose: &str) -> Result<PathBuf, ContentError> {
        let number = self.next_ingest.fetch_add(1, Ordering::Relaxed);
        let dir = self.ingest.join(format!("{purpose}-{number}"));
        std::fs::create_dir(&dir).map_err(|source| ContentError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// Moves the file `source` (on the store's filesystem) into the store as `digest`
    /// after hashing it; blocking. Returns its size.
    pub fn import_file(&self, source: &Path, digest: &str) -> Result<u64, ContentError> {
        let target = self.path(digest)?;
        let io_error = |action, err| ContentError::Io {
            action,
            path: source.to_path_buf(),
            source: err,
        };
        let mut file = std::fs::File::open(source).map_err(|err| io_error("open", err))?;
        let (actual, size) = sha256_reader(&mut file).map_err(|err| io_error("read", err))?;
        if actual != digest {
            return Err(ContentError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        file.sync_all().map_err(|err| io_error("fsync", err))?;
        std::fs::rename(source, &target).map_err(|err| io_error("rename", err))?;
        Ok(size)
    }

    /// Deletes a blob; an absent blob is not an error.
    pub fn remove(&self, digest: &str) -> Result<(), ContentError> {
        let path = self.path(digest)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ContentError::Io {
                action: "remove",
                path,
                source,
            }),
        }
    }

    /// Digests of every stored blob.
    pub fn list(&self) -> Result<Vec<String>, ContentError> {
        let entries = std::fs::read_dir(&self.blobs).map_err(|source| ContentError::Io {
            action: "list",
            path: self.blobs.clone(),
            source,
        })?;
        Ok(entries
            .flatten()
            .map(|entry| format!("sha256:{}", entry.file_name().to_string_lossy()))
            .collect())
    }

    /// Bytes and inodes the blobs use.
    pub fn usage(&self) -> (u64, u64) {
        let mut bytes = 0;
        let mut inodes = 0;
        if let Ok(entries) = std::fs::read_dir(&self.blobs) {
            for metadata in entries.flatten().filter_map(|entry| entry.metadata().ok()) {
                bytes += metadata.len();
                inodes += 1;
            }
        }
        (bytes, inodes)
    }
}

/// A blob being written. Dropping it without [`BlobWriter::commit`] deletes the partial
/// file, so a failed or cancelled download leaves nothing behind.
pub struct BlobWriter {
    file: tokio::fs::File,
    hasher: Sha256,
    written: u64,
    digest: String,
    size: u64,
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl BlobWriter {
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), ContentError> {
        self.written += chunk.len() as u64;
        if self.written > self.size {
            return Err(ContentError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: self.written,
            });
        }
        self.hasher.update(chunk);
        match self.file.write_all(chunk).await {
            Ok(()) => Ok(()),
            Err(source) => Err(self.io_error("write", source)),
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies size and digest, then makes the blob durable and visible.
    pub async fn commit(mut self) -> Result<(), ContentError> {
        if self.written != self.size {
            return Err(ContentError::SizeMismatch {
                digest: self.digest.clone(),
                expected: self.size,
                actual: self.written,
            });
        }
        let actual = format!(
            "sha256:{}",
            hex::encode(std::mem::take(&mut self.hasher).finalize())
        );
        if actual != self.digest {
            return Err(ContentError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        if let Err(source) = self.file.flush().await {
            return Err(self.io_error("flush", source));
        }
        if let Err(source) = self.file.sync_all().await {
            return Err(self.io_error("fsync", source));
        }
        tokio::fs::rename(&self.temp, &self.target)
            .await
            .map_err(|source| self.io_error("rename", source))?;
        self.committed = true;
        Ok(())
    }

    fn io_error(&self, action: &'static str, source: std::io::Error) -> ContentError {
        ContentError::Io {
            action,
            path: self.temp.clone(),
            source,
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: `open` clears the ingest directory at the next start anyway.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// `sha256:<hex>` and length of everything `reader` yields.
pub fn sha256_reader(reader: &mut impl std::io::Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((format!("sha256:{}", hex::encode(hasher.finalize())), size))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest_is_empty(root: &Path) -> bool {
        std::fs::read_dir(root.join("content/ingest"))
            .unwrap()
            .next()
            .is_none()
    }

    #[tokio::test]
    async fn verified_blob_is_stored_and_readable() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path()).unwrap();
        let digest = sha256_digest(b"hello");
        store.write_all(&digest, b"hello").await.unwrap();
        assert!(store.contains(&digest));
        assert_eq!(store.read(&digest).await.unwrap(), b"hello");
        assert_eq!(store.list().unwrap(), vec![digest.clone()]);
        assert_eq!(store.usage(), (5, 1));
        store.remove(&digest).unwrap();
        store.remove(&digest).unwrap();
        assert!(!store.contains(&digest));
        assert!(matches!(
            store.read(&digest).await,
            Err(ContentError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn wrong_digest_short_or_long_content_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path()).unwrap();
        let digest = sha256_digest(b"hello");
        let err = store.write_all(&digest, b"jello").await.unwrap_err();
        assert!(matches!(err, ContentError::DigestMismatch { .. }), "{err}");
        let mut short = store.writer(&digest, 5).await.unwrap();
        short.write(b"hell").await.unwrap();
        assert!(matches!(
            short.commit().await,
            Err(ContentError::SizeMismatch { .. })
        ));
        let mut long = store.writer(&digest, 5).await.unwrap();
        assert!(matches!(
            long.write(b"hello!").await,
            Err(ContentError::SizeMismatch { .. })
        ));
        drop(long);
        assert!(!store.contains(&digest));
        assert!(ingest_is_empty(root.path()));
    }

    #[tokio::test]
    async fn reopening_clears_unfinished_ingests_and_bad_digests_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = ContentStore::open(root.path()).unwrap();
        let digest = sha256_digest(b"x");
        let writer = store.writer(&digest, 1).await.unwrap();
        std::mem::forget(writer); // as if the process died mid-write
        assert!(!ingest_is_empty(root.path()));
        let store = ContentStore::open(root.path()).unwrap();
        assert!(ingest_is_empty(root.path()));
        for bad in ["sha256:../../etc/passwd", "md5:abc", "sha256:ABC"] {
            assert!(
                matches!(store.path(bad), Err(ContentError::InvalidDigest { .. })),
                "{bad}"
            );
        }
    }
}

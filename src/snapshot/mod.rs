//! Snapshots: image layers unpacked into directories, ready to be overlayfs lower dirs.
//!
//! One snapshot per layer, keyed by the layer's chain ID (OCI image-spec `config.md`,
//! "Layer ChainID"), so every image that contains the same layer stack shares it.
//!
//! On disk, under the root given to [`Snapshotter::new`]:
//! ```text
//! <root>/snapshots/<chain-id-hex>/fs/          the unpacked layer (overlay lowerdir)
//! <root>/snapshots/<chain-id-hex>/usage.json   {"bytes":N,"inodes":N}
//! <root>/snapshots/.tmp-<pid>-<n>/             unpacks and removals in progress
//! ```
//!
//! Invariants:
//! - A directory under its final name is complete: an unpack fills a `.tmp-*` directory,
//!   checks the diff ID, writes `usage.json`, syncs the filesystem and only then renames
//!   it into place; a removal renames the snapshot into a `.tmp-*` directory before
//!   deleting it. A crash at any moment leaves at worst `.tmp-*` debris, which
//!   [`Snapshotter::new`] deletes.
//! - Concurrent unpacks of one chain ID are safe: the first rename wins, the loser
//!   deletes its copy and succeeds too (the content is the same, the diff ID says so).
//! - Chain IDs are `sha256:` plus 64 lowercase hex digits, checked before any path is
//!   built from one, so no caller-supplied string can point outside the snapshots dir.
//!
//! Everything here is blocking std I/O; async callers use `spawn_blocking`.

pub mod rootfs;
mod unpack;

use std::cell::Cell;
use std::fs::{self, File, Permissions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use unpack::io_error;

const SNAPSHOTS_DIR: &str = "snapshots";
const FS_DIR: &str = "fs";
const USAGE_FILE: &str = "usage.json";
const TMP_PREFIX: &str = ".tmp-";
const SHA256_PREFIX: &str = "sha256:";
/// Read-ahead for uncompressed layers: the tar parser reads 512-byte headers.
const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Makes `.tmp-*` names unique within the process (the pid makes them unique across).
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a snapshot operation failed; messages name the path, entry or digest involved.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the layer stream: {source}")]
    Read { source: io::Error },
    #[error("cannot decompress the {compression:?} layer stream: {source}")]
    Decompress {
        compression: Compression,
        source: io::Error,
    },
    #[error("malformed layer tar: {source}")]
    Tar { source: io::Error },
    #[error("layer entry {entry:?} is unsafe: {reason}")]
    UnsafePath { entry: String, reason: String },
    #[error("layer entry {entry:?} is invalid: {reason}")]
    InvalidEntry { entry: String, reason: String },
    #[error("layer diff ID mismatch: expected {expected}, the layer's content is {actual}")]
    DiffIdMismatch { expected: String, actual: String },
    #[error("invalid chain ID {0:?}: want sha256: and 64 lowercase hex digits")]
    InvalidChainId(String),
    #[error("invalid diff ID {0:?}: want sha256: and 64 lowercase hex digits")]
    InvalidDiffId(String),
    #[error("unsupported layer media type {0:?}")]
    BadMediaType(String),
    #[error("snapshot {chain_id} not found")]
    NotFound { chain_id: String },
    #[error("usage record {path} is corrupt: {reason}")]
    CorruptUsage { path: PathBuf, reason: String },
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl SnapshotError {
    /// True when the layer itself is at fault (bad compression, malformed or hostile tar,
    /// wrong diff ID), as opposed to the node's filesystem.
    pub fn is_bad_layer(&self) -> bool {
        matches!(
            self,
            SnapshotError::Decompress { .. }
                | SnapshotError::Tar { .. }
                | SnapshotError::UnsafePath { .. }
                | SnapshotError::InvalidEntry { .. }
                | SnapshotError::DiffIdMismatch { .. }
                | SnapshotError::InvalidDiffId(_)
                | SnapshotError::BadMediaType(_)
        )
    }
}

impl Compression {
    /// The compression of a layer with this OCI or Docker media type (the non-distributable
    /// and foreign variants included; they differ only in where the blob may come from).
    pub fn from_media_type(media_type: &str) -> Result<Compression, SnapshotError> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
            other => Err(SnapshotError::BadMediaType(other.to_string())),
        }
    }
}

/// What one snapshot occupies: the sizes of its regular files and its distinct inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// The snapshots under one root directory.
#[derive(Debug)]
pub struct Snapshotter {
    /// `<root>/snapshots`.
    dir: PathBuf,
}

impl Snapshotter {
    /// Opens (creating it if needed) `<root>/snapshots` and deletes the `.tmp-*` debris of
    /// unpacks and removals that a crash interrupted. Must not run while another
    /// Snapshotter on the same root is working, whose in-progress directories it would
    /// delete; criusd's root lock guarantees that.
    pub fn new(root: &Path) -> Result<Snapshotter, SnapshotError> {
        let dir = root.join(SNAPSHOTS_DIR);
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        for entry in fs::read_dir(&dir).map_err(io_error("read directory", &dir))? {
            let entry = entry.map_err(io_error("read directory", &dir))?;
            if !entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(TMP_PREFIX.as_bytes())
            {
                continue;
            }
            let path = entry.path();
            // Debris that cannot be deleted costs disk space, not correctness: report it
            // and carry on rather than refuse to start.
            match remove_path(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed interrupted snapshot work")
                }
                Err(err) => tracing::warn!(error = %err, "cannot remove interrupted snapshot work"),
            }
        }
        Ok(Snapshotter { dir })
    }

    /// Whether a complete snapshot `chain_id` exists (false for an invalid chain ID).
    pub fn exists(&self, chain_id: &str) -> bool {
        self.snapshot_dir(chain_id)
            .ok()
            .and_then(|dir| fs::symlink_metadata(dir).ok())
            .is_some_and(|meta| meta.is_dir())
    }

    /// The unpacked filesystem of snapshot `chain_id`, for use as an overlay lower dir.
    /// It is a path whether or not the snapshot exists; it fails only on an invalid chain
    /// ID.
    pub fn path(&self, chain_id: &str) -> Result<PathBuf, SnapshotError> {
        Ok(self.snapshot_dir(chain_id)?.join(FS_DIR))
    }

    /// Unpacks one `compression`-compressed layer stream as the snapshot `chain_id`.
    ///
    /// Hashes the uncompressed tar while reading it and fails, leaving nothing behind,
    /// when the digest differs from `expected_diff_id` (`sha256:…`). An existing snapshot
    /// is kept and its usage returned without reading `layer`.
    pub fn unpack_layer(
        &self,
        chain_id: &str,
        layer: impl Read,
        compression: Compression,
        expected_diff_id: &str,
    ) -> Result<LayerUsage, SnapshotError> {
        let final_dir = self.snapshot_dir(chain_id)?;
        // Validated up front, so that a bad argument fails even when the snapshot exists.
        diff_id_hex(expected_diff_id)?;
        if fs::symlink_metadata(&final_dir).is_ok() {
            return self.usage(chain_id);
        }
        self.unpack_and_commit(&final_dir, layer, compression, expected_diff_id)
    }

    /// The usage recorded when snapshot `chain_id` was unpacked.
    pub fn usage(&self, chain_id: &str) -> Result<LayerUsage, SnapshotError> {
        let path = self.snapshot_dir(chain_id)?.join(USAGE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(SnapshotError::NotFound {
                    chain_id: chain_id.to_string(),
                });
            }
            Err(err) => return Err(io_error("read", &path)(err)),
        };
        parse_usage(&text).map_err(|reason| SnapshotError::CorruptUsage {
            path,
            reason: reason.to_string(),
        })
    }

    /// Removes snapshot `chain_id`; removing a missing one succeeds. The snapshot leaves
    /// its name (one rename) before its content is deleted; if that deletion fails the
    /// error is returned, and the debris is collected by the next [`Snapshotter::new`].
    pub fn remove(&self, chain_id: &str) -> Result<(), SnapshotError> {
        let final_dir = self.snapshot_dir(chain_id)?;
        if fs::symlink_metadata(&final_dir).is_err() {
            return Ok(());
        }
        let tmp = TmpDir::create(&self.dir)?;
        // Into a fresh directory we own, so the rename cannot replace anything.
        let doomed = tmp.path.join("snapshot");
        match fs::rename(&final_dir, &doomed) {
            Ok(()) => {}
            // Removed concurrently: the result is the one asked for.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return tmp.delete(),
            Err(err) => return Err(io_error("rename", &final_dir)(err)),
        }
        tracing::info!(chain_id, "removed snapshot");
        tmp.delete()
    }

    /// Chain IDs (`sha256:…`) of the complete snapshots, sorted.
    pub fn list(&self) -> Result<Vec<String>, SnapshotError> {
        let mut chain_ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_error("read directory", &self.dir))? {
            let entry = entry.map_err(io_error("read directory", &self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            if is_dir && is_sha256_hex(&name) {
                chain_ids.push(format!("{SHA256_PREFIX}{name}"));
            }
        }
        chain_ids.sort();
        Ok(chain_ids)
    }

    /// `<root>/snapshots/<hex>` for a valid chain ID.
    fn snapshot_dir(&self, chain_id: &str) -> Result<PathBuf, SnapshotError> {
        let hex = digest_hex(chain_id)
            .ok_or_else(|| SnapshotError::InvalidChainId(chain_id.to_string()))?;
        Ok(self.dir.join(hex))
    }

    /// Unpacks into a `.tmp-*` directory and renames it to `final_dir`; losing the rename
    /// to a concurrent unpack of the same layer is success.
    fn unpack_and_commit(
        &self,
        final_dir: &Path,
        layer: impl Read,
        compression: Compression,
        expected_diff_id: &str,
    ) -> Result<LayerUsage, SnapshotError> {
        let expected_hex = diff_id_hex(expected_diff_id)?;
        let tmp = TmpDir::create(&self.dir)?;
        let fs_dir = tmp.path.join(FS_DIR);
        fs::create_dir(&fs_dir).map_err(io_error("create directory", &fs_dir))?;
        // Explicit, because create_dir's mode is filtered by the umask.
        fs::set_permissions(&fs_dir, Permissions::from_mode(0o755))
            .map_err(io_error("chmod", &fs_dir))?;

        let actual_hex = unpack_stream(layer, compression, &fs_dir)?;
        if actual_hex != expected_hex {
            return Err(SnapshotError::DiffIdMismatch {
                expected: expected_diff_id.to_string(),
                actual: format!("{SHA256_PREFIX}{actual_hex}"),
            });
        }
        let usage = unpack::tree_usage(&fs_dir)?;
        let usage_path = tmp.path.join(USAGE_FILE);
        fs::write(
            &usage_path,
            format!(
                "{{\"bytes\":{},\"inodes\":{}}}\n",
                usage.bytes, usage.inodes
            ),
        )
        .map_err(io_error("write", &usage_path))?;

        // One syncfs makes every file of the unpack durable before the rename publishes
        // it; cheaper than an fsync per file.
        let tmp_handle = File::open(&tmp.path).map_err(io_error("open", &tmp.path))?;
        nix::unistd::syncfs(&tmp_handle).map_err(|errno| SnapshotError::Io {
            op: "sync the filesystem of",
            path: tmp.path.clone(),
            source: errno.into(),
        })?;
        drop(tmp_handle);

        match fs::rename(&tmp.path, final_dir) {
            Ok(()) => {
                tmp.disarm();
                sync_dir(&self.dir)?;
                tracing::info!(path = %final_dir.display(), bytes = usage.bytes, inodes = usage.inodes, "unpacked snapshot");
                Ok(usage)
            }
            // rename(2) onto a non-empty directory fails with ENOTEMPTY (or EEXIST): a
            // concurrent unpack of the same layer published first; ours is a duplicate.
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::AlreadyExists
                ) =>
            {
                tracing::debug!(path = %final_dir.display(), "snapshot unpacked concurrently; dropping this copy");
                tmp.delete()?;
                Ok(usage)
            }
            Err(err) => Err(io_error("rename", &tmp.path)(err)),
        }
    }
}

/// Chain IDs per the OCI image-spec: `chain[0] = diff_ids[0]`, `chain[n] =
/// sha256(chain[n-1] + " " + diff_ids[n])`, each as `sha256:<hex>`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let digest = Sha256::digest(format!("{parent} {diff_id}").as_bytes());
                format!("{SHA256_PREFIX}{}", hex::encode(digest))
            }
        };
        chain.push(next);
    }
    chain
}

/// Decompresses, unpacks into `dest` and returns the hex sha256 of the uncompressed
/// stream (the diff ID), trailing bytes after the tar's end included.
fn unpack_stream<R: Read>(
    layer: R,
    compression: Compression,
    dest: &Path,
) -> Result<String, SnapshotError> {
    // Errors surface from the tar parser whatever their origin; the reader that failed
    // first records its stage here, so they can be reported as what they are.
    let failed = Rc::new(Cell::new(None));
    let source = StageReader::new(layer, Stage::Read, &failed);
    let decoded = match compression {
        Compression::None => Decoded::Plain(BufReader::with_capacity(READ_BUFFER_SIZE, source)),
        Compression::Gzip => Decoded::Gzip(Box::new(StageReader::new(
            // Multi-member, as Go's reader (and so every registry client) accepts.
            flate2::read::MultiGzDecoder::new(source),
            Stage::Decompress,
            &failed,
        ))),
        Compression::Zstd => {
            let decoder =
                zstd::Decoder::new(source).map_err(|source| SnapshotError::Decompress {
                    compression,
                    source,
                })?;
            Decoded::Zstd(StageReader::new(decoder, Stage::Decompress, &failed))
        }
    };
    let classify = |source: io::Error| match failed.get() {
        Some(Stage::Read) => SnapshotError::Read { source },
        Some(Stage::Decompress) => SnapshotError::Decompress {
            compression,
            source,
        },
        None => SnapshotError::Tar { source },
    };
    let mut archive = tar::Archive::new(HashingReader {
        inner: decoded,
        hasher: Sha256::new(),
    });
    unpack::unpack_tar(&mut archive, dest, &classify)?;
    // The diff ID covers the whole stream, not just the entries the tar parser needed.
    let mut hashing = archive.into_inner();
    io::copy(&mut hashing, &mut io::sink()).map_err(classify)?;
    Ok(hex::encode(hashing.hasher.finalize()))
}

/// Which layer of the reading stack failed first.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Read,
    Decompress,
}

/// Passes reads through, recording its stage on the first real error.
struct StageReader<R> {
    inner: R,
    stage: Stage,
    failed: Rc<Cell<Option<Stage>>>,
}

impl<R> StageReader<R> {
    fn new(inner: R, stage: Stage, failed: &Rc<Cell<Option<Stage>>>) -> StageReader<R> {
        StageReader {
            inner,
            stage,
            failed: Rc::clone(failed),
        }
    }
}

impl<R: Read> Read for StageReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.inner.read(buf);
        if let Err(err) = &result {
            // Interrupted is retried by the caller, not a failure; an inner stage that
            // already failed is the real cause.
            if err.kind() != io::ErrorKind::Interrupted && self.failed.get().is_none() {
                self.failed.set(Some(self.stage));
            }
        }
        result
    }
}

/// The uncompressed layer stream, whichever the compression.
enum Decoded<R: Read> {
    Plain(BufReader<StageReader<R>>),
    // Boxed: the gzip decoder's state is several times the others' (one per layer).
    Gzip(Box<StageReader<flate2::read::MultiGzDecoder<StageReader<R>>>>),
    Zstd(StageReader<zstd::Decoder<'static, BufReader<StageReader<R>>>>),
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Plain(reader) => reader.read(buf),
            Decoded::Gzip(reader) => reader.read(buf),
            Decoded::Zstd(reader) => reader.read(buf),
        }
    }
}

/// Hashes every byte read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.hasher.update(&buf[..read]);
        Ok(read)
    }
}

/// A `.tmp-*` directory that is deleted when dropped, unless disarmed after its rename.
struct TmpDir {
    path: PathBuf,
    armed: bool,
}

impl TmpDir {
    /// Creates a fresh `.tmp-<pid>-<n>`; a name left by an earlier process with the same
    /// pid is skipped, never reused.
    fn create(parent: &Path) -> Result<TmpDir, SnapshotError> {
        loop {
            let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("{TMP_PREFIX}{}-{n}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TmpDir { path, armed: true }),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(io_error("create directory", &path)(err)),
            }
        }
    }

    /// Deletes the directory now, reporting failure (Drop can only log it).
    fn delete(mut self) -> Result<(), SnapshotError> {
        self.armed = false;
        remove_path(&self.path)
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        if self.armed {
            if let Err(err) = remove_path(&self.path) {
                // Left for Snapshotter::new to collect.
                tracing::warn!(error = %err, "cannot remove snapshot work directory");
            }
        }
    }
}

/// Deletes a directory tree (or a stray file) at `path`; a missing path is fine.
fn remove_path(path: &Path) -> Result<(), SnapshotError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) => Err(err),
    };
    match result {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io_error("remove", path)(err)),
        _ => Ok(()),
    }
}

/// fsyncs a directory, making a rename inside it durable.
fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("sync", dir))
}

/// The hex part of `sha256:<64 lowercase hex>`, or None for anything else.
fn digest_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix(SHA256_PREFIX)
        .filter(|hex| is_sha256_hex(hex))
}

fn diff_id_hex(diff_id: &str) -> Result<&str, SnapshotError> {
    digest_hex(diff_id).ok_or_else(|| SnapshotError::InvalidDiffId(diff_id.to_string()))
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parses `{"bytes":N,"inodes":N}` (whitespace and key order free).
fn parse_usage(text: &str) -> Result<LayerUsage, &'static str> {
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or("not a JSON object")?;
    let (mut bytes, mut inodes) = (None, None);
    for field in body.split(',') {
        let (key, value) = field.split_once(':').ok_or("a field without a value")?;
        let value: u64 = value
            .trim()
            .parse()
            .map_err(|_| "a value that is not a count")?;
        match key.trim() {
            "\"bytes\"" => bytes = Some(value),
            "\"inodes\"" => inodes = Some(value),
            _ => return Err("an unknown field"),
        }
    }
    match (bytes, inodes) {
        (Some(bytes), Some(inodes)) => Ok(LayerUsage { bytes, inodes }),
        _ => Err("missing bytes or inodes"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use tar::{EntryType, Header};

    /// Builds layer tars in memory, with raw entry names so that unsafe ones can be made.
    pub(in crate::snapshot) struct LayerBuilder {
        builder: tar::Builder<Vec<u8>>,
    }

    impl LayerBuilder {
        pub(in crate::snapshot) fn new() -> LayerBuilder {
            LayerBuilder {
                builder: tar::Builder::new(Vec::new()),
            }
        }

        /// Appends an entry; `edit` adjusts the header (mode 0644/0755, owner 0:0, mtime
        /// 1_000_000_000 by default) before its checksum is computed.
        pub(in crate::snapshot) fn entry(
            &mut self,
            kind: EntryType,
            name: &str,
            data: &[u8],
            edit: impl FnOnce(&mut Header),
        ) -> &mut LayerBuilder {
            let mut header = Header::new_gnu();
            let name_field = &mut header.as_old_mut().name;
            name_field[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(kind);
            header.set_size(data.len() as u64);
            header.set_mode(if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_000_000_000);
            edit(&mut header);
            header.set_cksum();
            self.builder.append(&header, data).unwrap();
            self
        }

        pub(in crate::snapshot) fn file(&mut self, name: &str, data: &[u8]) -> &mut LayerBuilder {
            self.entry(EntryType::Regular, name, data, |_| {})
        }

        pub(in crate::snapshot) fn dir(&mut self, name: &str) -> &mut LayerBuilder {
            self.entry(EntryType::Directory, name, b"", |_| {})
        }

        /// A symlink or hard link; the target is written raw, unchecked.
        pub(in crate::snapshot) fn link(
            &mut self,
            kind: EntryType,
            name: &str,
            target: &str,
        ) -> &mut LayerBuilder {
            self.entry(kind, name, b"", |header| {
                let field = &mut header.as_old_mut().linkname;
                field[..target.len()].copy_from_slice(target.as_bytes());
            })
        }

        pub(in crate::snapshot) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut LayerBuilder {
            self.builder
                .append_pax_extensions(records.iter().copied())
                .unwrap();
            self
        }

        pub(in crate::snapshot) fn finish(&mut self) -> Vec<u8> {
            let builder = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
            builder.into_inner().unwrap()
        }
    }

    fn diff_id(tar: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(tar)))
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn simple_layer() -> Vec<u8> {
        LayerBuilder::new()
            .dir("etc/")
            .file("etc/hostname", b"crius\n")
            .file("bin/sh", b"#!shell")
            .link(EntryType::Link, "bin/bash", "bin/sh")
            .finish()
    }

    const CHAIN: &str = "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676";

    fn snapshotter() -> (tempfile::TempDir, Snapshotter) {
        let root = tempfile::tempdir().unwrap();
        let snapshotter = Snapshotter::new(root.path()).unwrap();
        (root, snapshotter)
    }

    /// Names in `<root>/snapshots`: debris and snapshots alike.
    fn snapshot_dir_names(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(root.join(SNAPSHOTS_DIR))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A reader that fails after yielding `prefix`.
    struct FailingReader<'a> {
        prefix: &'a [u8],
    }

    impl Read for FailingReader<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.prefix.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "network down",
                ));
            }
            let n = self.prefix.read(buf)?;
            Ok(n)
        }
    }

    #[test]
    fn media_types_map_to_compressions() {
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Compression::Zstd,
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Compression::Gzip,
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                Compression::None,
            ),
        ];
        for (media_type, want) in cases {
            assert_eq!(
                Compression::from_media_type(media_type).unwrap(),
                want,
                "{media_type}"
            );
        }
        for bad in [
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "application/json",
            "",
        ] {
            assert!(
                matches!(Compression::from_media_type(bad), Err(SnapshotError::BadMediaType(ref t)) if t == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn chain_ids_match_the_image_spec() {
        // Computed with sha256sum: d_n = sha256 of "a", "b", "c";
        // chain[1] = sha256("<d1> <d2>"), chain[2] = sha256("<chain[1]> <d3>").
        let diff_ids = vec![
            "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb".to_string(),
            "sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d".to_string(),
            "sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6".to_string(),
        ];
        assert_eq!(
            chain_ids(&diff_ids),
            vec![
                diff_ids[0].clone(),
                "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676"
                    .to_string(),
                "sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106"
                    .to_string(),
            ]
        );
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn every_compression_unpacks() {
        let tar = simple_layer();
        let zstd_blob = zstd::encode_all(&tar[..], 3).unwrap();
        let blobs = [
            (Compression::None, tar.clone()),
            (Compression::Gzip, gzip(&tar)),
            (Compression::Zstd, zstd_blob),
        ];
        for (compression, blob) in blobs {
            let (root, snapshotter) = snapshotter();
            let usage = snapshotter
                .unpack_layer(CHAIN, &blob[..], compression, &diff_id(&tar))
                .unwrap();
            let fs_dir = snapshotter.path(CHAIN).unwrap();
            assert_eq!(
                fs_dir,
                root.path().join("snapshots").join(&CHAIN[7..]).join("fs")
            );
            assert_eq!(
                fs::read(fs_dir.join("etc/hostname")).unwrap(),
                b"crius\n",
                "{compression:?}"
            );
            assert_eq!(
                fs::read(fs_dir.join("bin/bash")).unwrap(),
                b"#!shell",
                "{compression:?}"
            );
            // etc, etc/hostname, bin, bin/sh (bin/bash is the same inode); 6 + 7 bytes.
            assert_eq!(
                usage,
                LayerUsage {
                    bytes: 13,
                    inodes: 4
                },
                "{compression:?}"
            );
            assert_eq!(snapshotter.usage(CHAIN).unwrap(), usage);
            assert!(snapshotter.exists(CHAIN));
            assert_eq!(snapshotter.list().unwrap(), vec![CHAIN.to_string()]);
            assert_eq!(
                snapshot_dir_names(root.path()),
                vec![CHAIN[7..].to_string()]
            );
        }
    }

    #[test]
    fn diff_id_covers_bytes_after_the_tar_end() {
        let mut tar = simple_layer();
        tar.extend_from_slice(&[0; 4096]);
        let (root, snapshotter) = snapshotter();
        let short = diff_id(&tar[..tar.len() - 4096]);
        let err = snapshotter
            .unpack_layer(CHAIN, &tar[..], Compression::None, &short)
            .unwrap_err();
        assert!(matches!(err, SnapshotError::DiffIdMismatch { .. }), "{err}");
        assert!(snapshot_dir_names(root.path()).is_empty());
        snapshotter
            .unpack_layer(CHAIN, &tar[..], Compression::None, &diff_id(&tar))
            .unwrap();
        assert!(snapshotter.exists(CHAIN));
    }

    #[test]
    fn diff_id_mismatch_leaves_nothing() {
        let tar = simple_layer();
        let wrong = diff_id(b"another layer");
        let (root, snapshotter) = snapshotter();
        let err = snapshotter
            .unpack_layer(CHAIN, &gzip(&tar)[..], Compression::Gzip, &wrong)
            .unwrap_err();
        match &err {
            SnapshotError::DiffIdMismatch { expected, actual } => {
                assert_eq!(expected, &wrong);
                assert_eq!(actual, &diff_id(&tar));
            }
            other => panic!("want DiffIdMismatch, got {other}"),
        }
        assert!(err.to_string().contains(&wrong), "{err}");
        assert!(
            snapshot_dir_names(root.path()).is_empty(),
            "tmp dir left behind"
        );
        assert!(!snapshotter.exists(CHAIN));
    }

    #[test]
    fn truncated_gzip_is_an_error_leaving_nothing() {
        let tar = simple_layer();
        let blob = gzip(&tar);
        let (root, snapshotter) = snapshotter();
        let err = snapshotter
            .unpack_layer(
                CHAIN,
                &blob[..blob.len() / 2],
                Compression::Gzip,
                &diff_id(&tar),
            )
            .unwrap_err();
        assert!(
            matches!(
                err,
                SnapshotError::Decompress {
                    compression: Compression::Gzip,
                    ..
                }
            ),
            "{err}"
        );
        assert!(snapshot_dir_names(root.path()).is_empty());
    }

    #[test]
    fn garbage_is_an_error_leaving_nothing() {
        let garbage: Vec<u8> = (0..10_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (root, snapshotter) = snapshotter();
        let expected = diff_id(&garbage);
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let err = snapshotter
                .unpack_layer(CHAIN, &garbage[..], compression, &expected)
                .unwrap_err();
            match compression {
                Compression::None => assert!(matches!(err, SnapshotError::Tar { .. }), "{err}"),
                _ => assert!(
                    matches!(err, SnapshotError::Decompress { .. }),
                    "{compression:?}: {err}"
                ),
            }
            assert!(
                snapshot_dir_names(root.path()).is_empty(),
                "{compression:?}"
            );
        }
    }

    #[test]
    fn truncated_tar_is_an_error_leaving_nothing() {
        let tar = LayerBuilder::new().file("big", &[7; 5000]).finish();
        let (root, snapshotter) = snapshotter();
        for cut in [100, 512 + 1000, 512 + 4999] {
            let result =
                snapshotter.unpack_layer(CHAIN, &tar[..cut], Compression::None, &diff_id(&tar));
            assert!(result.is_err(), "cut at {cut}");
            assert!(snapshot_dir_names(root.path()).is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn a_failing_source_is_a_read_error() {
        let tar = simple_layer();
        let (root, snapshotter) = snapshotter();
        for (compression, blob) in [
            (Compression::None, tar.clone()),
            (Compression::Gzip, gzip(&tar)),
        ] {
            let reader = FailingReader {
                prefix: &blob[..blob.len() / 2],
            };
            let err = snapshotter
                .unpack_layer(CHAIN, reader, compression, &diff_id(&tar))
                .unwrap_err();
            assert!(
                matches!(err, SnapshotError::Read { .. }),
                "{compression:?}: {err}"
            );
            assert!(err.to_string().contains("network down"), "{err}");
            assert!(snapshot_dir_names(root.path()).is_empty());
        }
    }

    #[test]
    fn an_unsafe_layer_leaves_nothing() {
        let tar = LayerBuilder::new()
            .file("ok", b"fine")
            .file("../escape", b"x")
            .finish();
        let (root, snapshotter) = snapshotter();
        let err = snapshotter
            .unpack_layer(CHAIN, &tar[..], Compression::None, &diff_id(&tar))
            .unwrap_err();
        assert!(
            matches!(&err, SnapshotError::UnsafePath { entry, .. } if entry == "../escape"),
            "{err}"
        );
        assert!(snapshot_dir_names(root.path()).is_empty());
        assert!(!root.path().join("snapshots/escape").exists());
    }

    #[test]
    fn concurrent_unpacks_of_one_layer_both_succeed() {
        let tar = LayerBuilder::new().file("data", &[1; 1 << 20]).finish();
        let blob = gzip(&tar);
        let expected = diff_id(&tar);
        let (root, snapshotter) = snapshotter();
        let snapshotter = Arc::new(snapshotter);
        let barrier = Arc::new(Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (snapshotter, barrier, blob, expected) = (
                    Arc::clone(&snapshotter),
                    Arc::clone(&barrier),
                    blob.clone(),
                    expected.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    snapshotter.unpack_layer(CHAIN, &blob[..], Compression::Gzip, &expected)
                })
            })
            .collect();
        for thread in threads {
            let usage = thread.join().unwrap().unwrap();
            assert_eq!(
                usage,
                LayerUsage {
                    bytes: 1 << 20,
                    inodes: 1
                }
            );
        }
        assert_eq!(
            snapshot_dir_names(root.path()),
            vec![CHAIN[7..].to_string()]
        );
        assert_eq!(
            fs::read(snapshotter.path(CHAIN).unwrap().join("data"))
                .unwrap()
                .len(),
            1 << 20
        );
    }

    #[test]
    fn losing_the_rename_is_success_and_drops_the_copy() {
        let tar = simple_layer();
        let (root, snapshotter) = snapshotter();
        snapshotter
            .unpack_layer(CHAIN, &tar[..], Compression::None, &diff_id(&tar))
            .unwrap();
        // The race's loser: the final name appeared after its existence check.
        let final_dir = snapshotter.snapshot_dir(CHAIN).unwrap();
        let usage = snapshotter
            .unpack_and_commit(&final_dir, &tar[..], Compression::None, &diff_id(&tar))
            .unwrap();
        assert_eq!(usage, snapshotter.usage(CHAIN).unwrap());
        assert_eq!(
            snapshot_dir_names(root.path()),
            vec![CHAIN[7..].to_string()]
        );
    }

    #[test]
    fn an_existing_snapshot_is_not_unpacked_again() {
        let tar = simple_layer();
        let (_root, snapshotter) = snapshotter();
        let first = snapshotter
            .unpack_layer(CHAIN, &tar[..], Compression::None, &diff_id(&tar))
            .unwrap();
        let unread = FailingReader { prefix: b"" };
        let again = snapshotter
            .unpack_layer(CHAIN, unread, Compression::None, &diff_id(&tar))
            .unwrap();
        assert_eq!(first, again);
    }

    #[test]
    fn remove_is_idempotent() {
        let tar = simple_layer();
        let (root, snapshotter) = snapshotter();
        snapshotter
            .unpack_layer(CHAIN, &tar[..], Compression::None, &diff_id(&tar))
            .unwrap();
        snapshotter.remove(CHAIN).unwrap();
        assert!(!snapshotter.exists(CHAIN));
        assert!(snapshot_dir_names(root.path()).is_empty());
        snapshotter.remove(CHAIN).unwrap();
        assert!(matches!(
            snapshotter.usage(CHAIN),
            Err(SnapshotError::NotFound { .. })
        ));
        assert!(snapshotter.list().unwrap().is_empty());
    }

    #[test]
    fn new_removes_leftover_tmp_dirs_only() {
        let tar = simple_layer();
        let root = tempfile::tempdir().unwrap();
        {
            let snapshotter = Snapshotter::new(root.path()).unwrap();
            snapshotter
                .unpack_layer(CHAIN, &tar[..], Compression::None, &diff_id(&tar))
                .unwrap();
        }
        let debris = root.path().join("snapshots/.tmp-999-0");
        fs::create_dir_all(debris.join("fs/usr/bin")).unwrap();
        fs::write(debris.join("fs/usr/bin/half"), b"half").unwrap();
        fs::write(root.path().join("snapshots/.tmp-stray-file"), b"").unwrap();
        let snapshotter = Snapshotter::new(root.path()).unwrap();
        assert_eq!(
            snapshot_dir_names(root.path()),
            vec![CHAIN[7..].to_string()]
        );
        assert_eq!(snapshotter.list().unwrap(), vec![CHAIN.to_string()]);
    }

    #[test]
    fn list_skips_debris_and_foreign_names() {
        let (root, snapshotter) = snapshotter();
        let tar = simple_layer();
        snapshotter
            .unpack_layer(CHAIN, &tar[..], Compression::None, &diff_id(&tar))
            .unwrap();
        fs::create_dir(root.path().join("snapshots/.tmp-1-1")).unwrap();
        fs::create_dir(root.path().join("snapshots/not-a-digest")).unwrap();
        fs::create_dir(
            root.path()
                .join("snapshots")
                .join(CHAIN[7..].to_uppercase()),
        )
        .unwrap();
        assert_eq!(snapshotter.list().unwrap(), vec![CHAIN.to_string()]);
    }

    #[test]
    fn invalid_chain_ids_are_refused() {
        let (root, snapshotter) = snapshotter();
        let tar = simple_layer();
        let hex = &CHAIN[7..];
        let bad = [
            "".to_string(),
            hex.to_string(),
            format!("sha512:{hex}"),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            "sha256:../../../../etc".to_string(),
            format!("sha256:{}/..", &hex[3..]),
        ];
        for chain_id in &bad {
            let invalid = |result: Result<(), SnapshotError>| matches!(result, Err(SnapshotError::InvalidChainId(ref id)) if id == chain_id);
            assert!(
                invalid(snapshotter.path(chain_id).map(drop)),
                "{chain_id:?}"
            );
            assert!(invalid(snapshotter.remove(chain_id)), "{chain_id:?}");
            assert!(
                invalid(snapshotter.usage(chain_id).map(drop)),
                "{chain_id:?}"
            );
            assert!(
                invalid(
                    snapshotter
                        .unpack_layer(chain_id, &tar[..], Compression::None, &diff_id(&tar))
                        .map(drop)
                ),
                "{chain_id:?}"
            );
            assert!(!snapshotter.exists(chain_id), "{chain_id:?}");
        }
        let err = snapshotter
            .unpack_layer(CHAIN, &tar[..], Compression::None, "sha256:abc")
            .unwrap_err();
        assert!(matches!(err, SnapshotError::InvalidDiffId(_)), "{err}");
        assert!(snapshot_dir_names(root.path()).is_empty());
    }

    #[test]
    fn usage_records_round_trip_and_corruption_is_reported() {
        assert_eq!(
            parse_usage("{\"bytes\":12,\"inodes\":3}\n"),
            Ok(LayerUsage {
                bytes: 12,
                inodes: 3
            })
        );
        assert_eq!(
            parse_usage(" { \"inodes\" : 3 , \"bytes\" : 12 } "),
            Ok(LayerUsage {
                bytes: 12,
                inodes: 3
            })
        );
        for bad in [
            "",
            "{}",
            "{\"bytes\":1}",
            "{\"bytes\":-1,\"inodes\":2}",
            "[1,2]",
            "{\"bytes\":1,\"inodes\":2,\"x\":3}",
        ] {
            assert!(parse_usage(bad).is_err(), "{bad:?}");
        }
        let (_root, snapshotter) = snapshotter();
        let tar = simple_layer();
        snapshotter
            .unpack_layer(CHAIN, &tar[..], Compression::None, &diff_id(&tar))
            .unwrap();
        let usage_path = snapshotter.snapshot_dir(CHAIN).unwrap().join(USAGE_FILE);
        fs::write(&usage_path, b"{\"bytes\":").unwrap();
        let err = snapshotter.usage(CHAIN).unwrap_err();
        assert!(
            matches!(err, SnapshotError::CorruptUsage { ref path, .. } if *path == usage_path),
            "{err}"
        );
    }
}

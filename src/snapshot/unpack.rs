//! Applies one layer tar stream to a directory, converting OCI whiteouts to overlayfs form.
//!
//! The layer format is the OCI image-spec's "layer filesystem changeset"
//! (image-spec `layer.md`); the output is a directory usable as an overlayfs lower dir:
//! - `DIR/.wh.NAME` becomes a 0/0 character device at `DIR/NAME` (overlayfs's whiteout);
//! - `DIR/.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y` on `DIR`;
//! - other `.wh..wh.*` names are AUFS bookkeeping and are skipped;
//! - everything else is created with its mode (setuid/setgid/sticky included), numeric
//!   owner, PAX `SCHILY.xattr.*` xattrs and mtime. Directory mtimes are set last, because
//!   creating children changes them.
//!
//! Invariants:
//! - Nothing is ever created outside `root`: entry paths are relative (`./` is stripped),
//!   have no `..` component, never pass through a symlink (a layer could create
//!   `etc -> /` and then write `etc/passwd`), and hard links only name existing
//!   non-directories inside the layer. The checks are made with `lstat` on paths, which is
//!   race-free only because `root` is a private temporary directory that nothing else
//!   writes to while we unpack.
//! - Symlinks are created with their target verbatim and are never followed: files are
//!   opened `O_NOFOLLOW | O_EXCL`, owners, xattrs and times are set with the
//!   no-follow variants.
//! - A later entry replaces an earlier one at the same path (a directory over a directory
//!   only updates its metadata).
//! - Any input, however malformed, yields an error rather than a panic; the caller owns
//!   cleaning `root` up.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, AT_FDCWD};
use nix::libc::dev_t;
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use tar::EntryType;

use super::{LayerUsage, SnapshotError};

/// The marker that makes its directory opaque (hides the lower layers' content).
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of AUFS metadata names (the opaque marker is the only one with a meaning here).
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
/// Prefix of a whiteout: `.wh.NAME` deletes `NAME` from the lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The xattr overlayfs reads to treat a directory as opaque.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// overlayfs interprets every `trusted.overlay.*` xattr on a lower dir (redirects,
/// metacopy, origin…); only this module may set them, never a layer's own records.
const OVERLAY_XATTR_PREFIX: &[u8] = b"trusted.overlay.";
/// PAX record prefix carrying one xattr (the format GNU tar, Go and Docker write).
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";
/// Mode of directories created because an entry needs them but the tar does not list them.
const IMPLICIT_DIR_MODE: u32 = 0o755;
const COPY_BUFFER_SIZE: usize = 64 * 1024;

/// Unpacks every entry of `archive` under `root`, which must be an existing directory.
///
/// `stream_error` classifies an error that comes out of the archive itself (reading the
/// layer, decompressing it, parsing the tar), which only the caller can tell apart.
pub(super) fn unpack_tar<R: Read>(
    archive: &mut tar::Archive<R>,
    root: &Path,
    stream_error: &dyn Fn(io::Error) -> SnapshotError,
) -> Result<(), SnapshotError> {
    let mut unpacker = Unpacker {
        root,
        dir_times: Vec::new(),
        whiteouts: HashSet::new(),
        buffer: vec![0; COPY_BUFFER_SIZE],
    };
    for entry in archive.entries().map_err(stream_error)? {
        let mut entry = entry.map_err(stream_error)?;
        unpacker.apply(&mut entry, stream_error)?;
    }
    unpacker.set_dir_times()
}

/// Sizes of regular files and the number of distinct inodes below `root` (not counting
/// `root` itself); hard links count once. Walks with an explicit stack so that a deeply
/// nested layer cannot overflow the thread's stack.
pub(super) fn tree_usage(root: &Path) -> Result<LayerUsage, SnapshotError> {
    let mut usage = LayerUsage {
        bytes: 0,
        inodes: 0,
    };
    let mut seen = HashSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for child in fs::read_dir(&dir).map_err(io_error("read directory", &dir))? {
            let child = child.map_err(io_error("read directory", &dir))?;
            let path = child.path();
            let meta = fs::symlink_metadata(&path).map_err(io_error("stat", &path))?;
            if meta.is_dir() {
                pending.push(path);
            }
            if seen.insert((meta.dev(), meta.ino())) {
                usage.inodes += 1;
                if meta.is_file() {
                    usage.bytes += meta.len();
                }
            }
        }
    }
    Ok(usage)
}

/// Builds the `map_err` closure for a filesystem operation `op` on `path`.
pub(super) fn io_error<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> SnapshotError + 'a {
    move |source| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Like [`io_error`] for the `nix` calls.
fn errno_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> SnapshotError + 'a {
    move |errno| SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source: errno.into(),
    }
}

/// The state of one layer's unpacking.
struct Unpacker<'a> {
    root: &'a Path,
    /// Directory mtimes, applied in order once every entry is written (a directory
    /// listed twice gets the later entry's time).
    dir_times: Vec<(PathBuf, TimeSpec)>,
    /// Whiteouts created by this layer: a directory entry that later replaces one must be
    /// opaque, or overlayfs would merge the deleted lower directory back in.
    whiteouts: HashSet<PathBuf>,
    buffer: Vec<u8>,
}

/// Metadata of one entry, from its header and PAX records.
struct EntryMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Unpacker<'_> {
    fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        stream_error: &dyn Fn(io::Error) -> SnapshotError,
    ) -> Result<(), SnapshotError> {
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Global PAX headers only carry defaults (comments, charsets) that nothing
            // here uses.
            tracing::debug!(entry = %name, "skipping global PAX header");
            return Ok(());
        }
        let components =
            relative_components(&raw_path).map_err(|reason| unsafe_path(&name, reason))?;
        let meta = EntryMeta::read(entry, &name)?;

        let Some((base, parents)) = components.split_last() else {
            return self.apply_root(kind, &meta, &name);
        };
        let parent = self.make_parents(parents, &name)?;
        let base = base.as_bytes();
        if base == OPAQUE_MARKER {
            return set_xattr(&parent, OsStr::new(OVERLAY_OPAQUE_XATTR), b"y");
        }
        if base.starts_with(WHITEOUT_META_PREFIX) {
            tracing::debug!(entry = %name, "skipping AUFS metadata entry");
            return Ok(());
        }
        if let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX) {
            return self.make_whiteout(&parent, hidden, &meta, &name);
        }

        let path = parent.join(OsStr::from_bytes(base));
        match kind {
            EntryType::Directory => self.make_dir(&path, &meta),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.make_file(entry, &path, &meta, stream_error)
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid_entry(&name, "symlink without a target"))?
                    .into_owned();
                self.remove_existing(&path)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(io_error("create symlink", &path))?;
                set_metadata(&path, &meta, false)?;
                set_times(&path, meta.mtime)
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid_entry(&name, "hard link without a target"))?
                    .into_owned();
                self.make_hard_link(&path, &target, &name)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.make_special(entry, kind, &path, &meta, &name)
            }
            other => Err(invalid_entry(
                &name,
                &format!("unsupported entry type {other:?}"),
            )),
        }
    }

    /// An entry naming the layer root itself (`./`): a directory updates the root's
    /// metadata; anything else would replace the root and is refused.
    fn apply_root(
        &mut self,
        kind: EntryType,
        meta: &EntryMeta,
        name: &str,
    ) -> Result<(), SnapshotError> {
        if kind != EntryType::Directory {
            return Err(unsafe_path(
                name,
                "a non-directory entry for the layer root",
            ));
        }
        set_metadata(self.root, meta, true)?;
        self.dir_times.push((self.root.to_path_buf(), meta.mtime));
        Ok(())
    }

    /// Walks `parents` below the root, creating missing directories (mode 0755) and
    /// refusing to pass through a symlink or a non-directory. Returns the last one.
    fn make_parents(&self, parents: &[&OsStr], name: &str) -> Result<PathBuf, SnapshotError> {
        let mut dir = self.root.to_path_buf();
        for component in parents {
            dir.push(component);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(unsafe_path(
                        name,
                        "its parent path passes through a symlink",
                    ));
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(unsafe_path(name, "its parent path is not a directory")),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&dir).map_err(io_error("create directory", &dir))?;
                    // Explicit, because create_dir's mode is filtered by the umask.
                    fs::set_permissions(&dir, Permissions::from_mode(IMPLICIT_DIR_MODE))
                        .map_err(io_error("chmod", &dir))?;
                }
                Err(err) => return Err(io_error("stat", &dir)(err)),
            }
        }
        Ok(dir)
    }

    /// Makes `parent/hidden` an overlayfs whiteout. A path this layer already created is
    /// kept: per the image-spec a whiteout only deletes from the layers below.
    fn make_whiteout(
        &mut self,
        parent: &Path,
        hidden: &[u8],
        meta: &EntryMeta,
        name: &str,
    ) -> Result<(), SnapshotError> {
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(unsafe_path(
                name,
                "a whiteout for an empty, `.` or `..` name",
            ));
        }
        let path = parent.join(OsStr::from_bytes(hidden));
        match fs::symlink_metadata(&path) {
            Ok(_) => {
                tracing::debug!(entry = %name, "whiteout of a path from the same layer: keeping the path");
                return Ok(());
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error("stat", &path)(err)),
        }
        mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(errno_error("create whiteout", &path))?;
        std::os::unix::fs::lchown(&path, Some(meta.uid), Some(meta.gid))
            .map_err(io_error("chown", &path))?;
        self.whiteouts.insert(path);
        Ok(())
    }

    fn make_dir(&mut self, path: &Path, meta: &EntryMeta) -> Result<(), SnapshotError> {
        let existing = match fs::symlink_metadata(path) {
            Ok(existing) => Some(existing),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(io_error("stat", path)(err)),
        };
        if !existing.is_some_and(|existing| existing.is_dir()) {
            let replaces_whiteout = self.remove_existing(path)?;
            fs::create_dir(path).map_err(io_error("create directory", path))?;
            if replaces_whiteout {
                set_xattr(path, OsStr::new(OVERLAY_OPAQUE_XATTR), b"y")?;
            }
        }
        set_metadata(path, meta, true)?;
        self.dir_times.push((path.to_path_buf(), meta.mtime));
        Ok(())
    }

    fn make_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        meta: &EntryMeta,
        stream_error: &dyn Fn(io::Error) -> SnapshotError,
    ) -> Result<(), SnapshotError> {
        self.remove_existing(path)?;
        // O_EXCL | O_NOFOLLOW: never write through anything that appeared at `path`.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
            .open(path)
            .map_err(io_error("create file", path))?;
        loop {
            let read = match entry.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(stream_error(err)),
            };
            file.write_all(&self.buffer[..read])
                .map_err(io_error("write", path))?;
        }
        drop(file);
        set_metadata(path, meta, true)?;
        set_times(path, meta.mtime)
    }

    /// Links `path` to `target`, an existing non-directory of this layer.
    fn make_hard_link(
        &mut self,
        path: &Path,
        target: &[u8],
        name: &str,
    ) -> Result<(), SnapshotError> {
        let components = relative_components(target)
            .map_err(|reason| unsafe_path(name, &format!("hard link target {reason}")))?;
        let Some((base, parents)) = components.split_last() else {
            return Err(unsafe_path(name, "hard link to the layer root"));
        };
        let mut source = self.root.to_path_buf();
        for component in parents {
            source.push(component);
            match fs::symlink_metadata(&source) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(unsafe_path(
                        name,
                        "hard link target passes through a symlink",
                    ));
                }
                Ok(_) | Err(_) => {
                    return Err(unsafe_path(
                        name,
                        "hard link target does not exist in the layer",
                    ))
                }
            }
        }
        source.push(base);
        match fs::symlink_metadata(&source) {
            Ok(meta) if meta.is_dir() => {
                return Err(unsafe_path(name, "hard link target is a directory"));
            }
            Ok(_) => {}
            Err(_) => {
                return Err(unsafe_path(
                    name,
                    "hard link target does not exist in the layer",
                ))
            }
        }
        if source == path {
            // A link to itself: the file is already what the entry asks for.
            return Ok(());
        }
        self.remove_existing(path)?;
        // std's hard_link is linkat(…, 0): a symlink target is linked, not followed.
        fs::hard_link(&source, path).map_err(io_error("create hard link", path))
    }

    fn make_special<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        kind: EntryType,
        path: &Path,
        meta: &EntryMeta,
        name: &str,
    ) -> Result<(), SnapshotError> {
        let (flag, dev) = match kind {
            EntryType::Char => (SFlag::S_IFCHR, device_number(entry.header(), name)?),
            EntryType::Block => (SFlag::S_IFBLK, device_number(entry.header(), name)?),
            _ => (SFlag::S_IFIFO, 0),
        };
        self.remove_existing(path)?;
        mknod(path, flag, Mode::empty(), dev).map_err(errno_error("create device node", path))?;
        set_metadata(path, meta, true)?;
        set_times(path, meta.mtime)
    }

    /// Removes whatever a previous entry put at `path` (a directory with its content).
    /// Returns whether it was a whiteout this layer created.
    fn remove_existing(&mut self, path: &Path) -> Result<bool, SnapshotError> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(io_error("stat", path)(err)),
        };
        // remove_dir_all does not follow symlinks, so this stays inside the layer.
        if meta.is_dir() {
            fs::remove_dir_all(path).map_err(io_error("remove", path))?;
        } else {
            fs::remove_file(path).map_err(io_error("remove", path))?;
        }
        let was_whiteout = self.whiteouts.remove(path);
        // Forget what lived below it: a deferred directory time must not land on whatever
        // replaces it, nor fail on a directory that is gone.
        self.dir_times.retain(|(dir, _)| !dir.starts_with(path));
        self.whiteouts
            .retain(|whiteout| !whiteout.starts_with(path));
        Ok(was_whiteout)
    }

    fn set_dir_times(&self) -> Result<(), SnapshotError> {
        for (path, mtime) in &self.dir_times {
            set_times(path, *mtime)?;
        }
        Ok(())
    }
}

impl EntryMeta {
    fn read<R: Read>(
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<EntryMeta, SnapshotError> {
        let header = entry.header();
        let field = |what: &str, err: io::Error| invalid_entry(name, &format!("bad {what}: {err}"));
        let mode = header.mode().map_err(|err| field("mode", err))? & 0o7777;
        // The tar crate has already applied PAX `uid`/`gid` records to the header.
        let id = |what: &str, value: io::Result<u64>| {
            let value = value.map_err(|err| field(what, err))?;
            u32::try_from(value)
                .map_err(|_| invalid_entry(name, &format!("{what} {value} is out of range")))
        };
        let uid = id("uid", header.uid())?;
        let gid = id("gid", header.gid())?;
        let header_mtime = header.mtime().map_err(|err| field("mtime", err))?;
        let mut mtime = TimeSpec::new(i64::try_from(header_mtime).unwrap_or(i64::MAX), 0);
        let mut xattrs = Vec::new();
        let extensions = entry
            .pax_extensions()
            .map_err(|err| field("PAX header", err))?;
        for extension in extensions.into_iter().flatten() {
            let extension = extension.map_err(|err| field("PAX record", err))?;
            let key = extension.key_bytes();
            if key == b"mtime" {
                // PAX mtime is exact (fractional, negative, past 2242), the header's is not.
                if let Some(exact) = parse_pax_time(extension.value_bytes()) {
                    mtime = exact;
                }
            } else if let Some(xattr) = key.strip_prefix(PAX_XATTR_PREFIX) {
                if xattr.starts_with(OVERLAY_XATTR_PREFIX) {
                    tracing::warn!(entry = %name, xattr = %String::from_utf8_lossy(xattr), "ignoring overlayfs xattr from the layer");
                    continue;
                }
                xattrs.push((
                    OsStr::from_bytes(xattr).to_os_string(),
                    extension.value_bytes().to_vec(),
                ));
            }
        }
        Ok(EntryMeta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        })
    }
}

/// The device number of a character or block device entry.
fn device_number(header: &tar::Header, name: &str) -> Result<dev_t, SnapshotError> {
    let part = |number: io::Result<Option<u32>>| {
        number
            .map(|number| u64::from(number.unwrap_or(0)))
            .map_err(|err| invalid_entry(name, &format!("bad device number: {err}")))
    };
    Ok(makedev(
        part(header.device_major())?,
        part(header.device_minor())?,
    ))
}

/// Sets owner, then mode (chown clears setuid/setgid, so mode must come after), then
/// xattrs (chown clears `security.capability`, so they come after too). `chmod` is
/// skipped for symlinks, whose mode Linux ignores.
fn set_metadata(path: &Path, meta: &EntryMeta, chmod: bool) -> Result<(), SnapshotError> {
    std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
        .map_err(io_error("chown", path))?;
    if chmod {
        fs::set_permissions(path, Permissions::from_mode(meta.mode))
            .map_err(io_error("chmod", path))?;
    }
    for (name, value) in &meta.xattrs {
        match xattr::set(path, name, value) {
            Ok(()) => {}
            // Like Docker: a filesystem without xattrs, or a namespace the kernel refuses
            // on this file type (`user.*` on a symlink), loses the xattr, not the layer.
            Err(err) if xattr_refused(&err) => {
                tracing::warn!(path = %path.display(), xattr = %name.to_string_lossy(), error = %err, "xattr not set");
            }
            Err(err) => return Err(io_error("set xattr", path)(err)),
        }
    }
    Ok(())
}

/// ENOTSUP: the filesystem has no xattrs; EPERM: the kernel refuses the namespace on this
/// file type.
fn xattr_refused(err: &io::Error) -> bool {
    let code = err.raw_os_error();
    code == Some(Errno::ENOTSUP as i32) || code == Some(Errno::EPERM as i32)
}

fn set_xattr(path: &Path, name: &OsStr, value: &[u8]) -> Result<(), SnapshotError> {
    xattr::set(path, name, value).map_err(io_error("set xattr", path))
}

/// Sets atime and mtime to `mtime` without following a symlink at `path`.
fn set_times(path: &Path, mtime: TimeSpec) -> Result<(), SnapshotError> {
    utimensat(
        AT_FDCWD,
        path,
        &mtime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(errno_error("set times", path))
}

/// Splits an entry path into its components, dropping `.` and empty ones (so `./a//b`
/// is `a/b`). Fails on an absolute path or a `..` component.
fn relative_components(raw: &[u8]) -> Result<Vec<&OsStr>, &'static str> {
    if raw.starts_with(b"/") {
        return Err("is absolute");
    }
    let mut components = Vec::new();
    for component in raw.split(|byte| *byte == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err("has a `..` component"),
            component => components.push(OsStr::from_bytes(component)),
        }
    }
    Ok(components)
}

/// Parses a PAX time, `[-]SECONDS[.FRACTION]`.
fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let text = std::str::from_utf8(value).ok()?;
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    if seconds.is_empty()
        || !seconds.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut seconds: i64 = seconds.parse().ok()?;
    let digits = &fraction[..fraction.len().min(9)];
    let mut nanos: i64 = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    nanos *= 10_i64.pow(9 - digits.len() as u32);
    if negative {
        seconds = -seconds;
        if nanos > 0 {
            seconds -= 1;
            nanos = 1_000_000_000 - nanos;
        }
    }
    Some(TimeSpec::new(seconds, nanos))
}

fn unsafe_path(entry: &str, reason: &str) -> SnapshotError {
    SnapshotError::UnsafePath {
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

fn invalid_entry(entry: &str, reason: &str) -> SnapshotError {
    SnapshotError::InvalidEntry {
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::LayerBuilder;
    use nix::sys::stat::{major, minor};
    use std::os::unix::fs::FileTypeExt;

    /// Unpacks `tar` into `<tempdir>/fs`, returning the tempdir, the root and the result.
    fn unpack(tar: &[u8]) -> (tempfile::TempDir, PathBuf, Result<(), SnapshotError>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("fs");
        fs::create_dir(&root).unwrap();
        let mut archive = tar::Archive::new(tar);
        let result = unpack_tar(&mut archive, &root, &|source| SnapshotError::Tar { source });
        (dir, root, result)
    }

    fn unpack_ok(tar: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let (dir, root, result) = unpack(tar);
        result.unwrap();
        (dir, root)
    }

    /// Asserts that the layer fails as unsafe, naming `entry`, for a reason that mentions
    /// `why`.
    fn assert_unsafe(tar: &[u8], entry: &str, why: &str) -> tempfile::TempDir {
        let (dir, _root, result) = unpack(tar);
        match result {
            Err(SnapshotError::UnsafePath {
                entry: named,
                reason,
            }) => {
                assert_eq!(named, entry, "reason: {reason}");
                assert!(reason.contains(why), "{entry:?}: {reason:?} lacks {why:?}");
            }
            other => panic!("want UnsafePath for {entry:?}, got {other:?}"),
        }
        dir
    }

    fn lstat(path: &Path) -> fs::Metadata {
        fs::symlink_metadata(path).unwrap()
    }

    #[test]
    fn files_and_dirs_keep_mode_owner_and_mtime() {
        let tar = LayerBuilder::new()
            .entry(EntryType::Directory, "usr/", b"", |h| {
                h.set_mode(0o750);
                h.set_uid(1000);
                h.set_gid(1000);
                h.set_mtime(1_400_000_000);
            })
            .entry(EntryType::Regular, "usr/su", b"binary", |h| {
                h.set_mode(0o4755);
                h.set_uid(1000);
                h.set_gid(1000);
                h.set_mtime(1_500_000_000);
            })
            .entry(EntryType::Regular, "usr/wall", b"", |h| h.set_mode(0o2711))
            .entry(EntryType::Directory, "tmp/", b"", |h| h.set_mode(0o1777))
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        let usr = lstat(&root.join("usr"));
        assert!(usr.is_dir());
        assert_eq!(usr.mode() & 0o7777, 0o750);
        assert_eq!((usr.uid(), usr.gid()), (1000, 1000));
        // Set after usr/su and usr/wall were written into it.
        assert_eq!(usr.mtime(), 1_400_000_000);
        let su = lstat(&root.join("usr/su"));
        assert_eq!(su.mode() & 0o7777, 0o4755);
        assert_eq!((su.uid(), su.gid()), (1000, 1000));
        assert_eq!(su.mtime(), 1_500_000_000);
        assert_eq!(fs::read(root.join("usr/su")).unwrap(), b"binary");
        assert_eq!(lstat(&root.join("usr/wall")).mode() & 0o7777, 0o2711);
        assert_eq!(lstat(&root.join("tmp")).mode() & 0o7777, 0o1777);
    }

    #[test]
    fn unlisted_parents_are_created_0755() {
        let tar = LayerBuilder::new()
            .entry(EntryType::Regular, "a/b/c", b"x", |h| h.set_mode(0o600))
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        for dir in ["a", "a/b"] {
            let meta = lstat(&root.join(dir));
            assert!(meta.is_dir(), "{dir}");
            assert_eq!(meta.mode() & 0o7777, 0o755, "{dir}");
        }
        assert_eq!(lstat(&root.join("a/b/c")).mode() & 0o7777, 0o600);
    }

    #[test]
    fn leading_dot_slash_is_stripped_and_root_entry_updates_the_root() {
        let tar = LayerBuilder::new()
            .entry(EntryType::Directory, "./", b"", |h| h.set_mode(0o711))
            .file("./etc//./motd", b"hi")
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        assert_eq!(fs::read(root.join("etc/motd")).unwrap(), b"hi");
        assert_eq!(lstat(&root).mode() & 0o7777, 0o711);
        assert_eq!(lstat(&root).mtime(), 1_000_000_000);
    }

    #[test]
    fn whiteout_becomes_a_0_0_char_device() {
        let tar = LayerBuilder::new()
            .dir("etc/")
            .file("etc/.wh.gone", b"")
            .file(".wh.toplevel", b"")
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        for path in ["etc/gone", "toplevel"] {
            let meta = lstat(&root.join(path));
            assert!(meta.file_type().is_char_device(), "{path}");
            assert_eq!(meta.rdev(), 0, "{path}");
        }
        assert!(fs::symlink_metadata(root.join("etc/.wh.gone")).is_err());
        assert!(fs::symlink_metadata(root.join(".wh.toplevel")).is_err());
    }

    #[test]
    fn opaque_marker_sets_the_overlay_xattr() {
        let tar = LayerBuilder::new()
            .file("var/lib/.wh..wh..opq", b"")
            .file("var/lib/new", b"n")
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        let lib = root.join("var/lib");
        assert_eq!(
            xattr::get(&lib, OVERLAY_OPAQUE_XATTR).unwrap(),
            Some(b"y".to_vec())
        );
        assert_eq!(
            xattr::get(root.join("var"), OVERLAY_OPAQUE_XATTR).unwrap(),
            None
        );
        assert!(fs::symlink_metadata(lib.join(".wh..wh..opq")).is_err());
        assert_eq!(fs::read(lib.join("new")).unwrap(), b"n");
    }

    #[test]
    fn directory_replacing_a_whiteout_is_opaque() {
        let tar = LayerBuilder::new()
            .file(".wh.data", b"")
            .dir("data/")
            .file("data/fresh", b"")
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        let data = root.join("data");
        assert!(lstat(&data).is_dir());
        assert_eq!(
            xattr::get(&data, OVERLAY_OPAQUE_XATTR).unwrap(),
            Some(b"y".to_vec())
        );
    }

    #[test]
    fn whiteout_keeps_a_path_from_the_same_layer_and_aufs_metadata_is_skipped() {
        let tar = LayerBuilder::new()
            .file("kept", b"mine")
            .file(".wh.kept", b"")
            .file(".wh..wh.plnk", b"")
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        assert_eq!(fs::read(root.join("kept")).unwrap(), b"mine");
        let names: Vec<_> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("kept")]);
    }

    #[test]
    fn hard_link_shares_the_inode() {
        let tar = LayerBuilder::new()
            .file("bin/busybox", b"bb")
            .link(EntryType::Link, "bin/ls", "bin/busybox")
            .link(EntryType::Link, "sbin/init", "./bin/busybox")
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        let original = lstat(&root.join("bin/busybox"));
        for link in ["bin/ls", "sbin/init"] {
            assert_eq!(lstat(&root.join(link)).ino(), original.ino(), "{link}");
        }
        assert_eq!(original.nlink(), 3);
        let usage = tree_usage(&root).unwrap();
        assert_eq!(
            usage,
            LayerUsage {
                bytes: 2,
                inodes: 3
            }
        );
    }

    #[test]
    fn symlinks_are_verbatim_and_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let victim_str = victim.to_str().unwrap();
        let tar = LayerBuilder::new()
            .entry(EntryType::Symlink, "rel", b"", |h| {
                h.set_link_name_literal("../../x/./y").unwrap();
                h.set_mtime(1_200_000_000);
                h.set_uid(1000);
            })
            .link(EntryType::Symlink, "abs", victim_str)
            // A later regular file at the same path replaces the link, not its target.
            .link(EntryType::Symlink, "over", victim_str)
            .file("over", b"new")
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        assert_eq!(
            fs::read_link(root.join("rel")).unwrap(),
            Path::new("../../x/./y")
        );
        let rel = lstat(&root.join("rel"));
        assert_eq!(rel.mtime(), 1_200_000_000);
        assert_eq!(rel.uid(), 1000);
        assert_eq!(fs::read_link(root.join("abs")).unwrap(), victim);
        assert!(lstat(&root.join("over")).is_file());
        assert_eq!(fs::read(root.join("over")).unwrap(), b"new");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn device_nodes_and_fifos_are_created() {
        let tar = LayerBuilder::new()
            .entry(EntryType::Char, "dev/null", b"", |h| {
                h.set_device_major(1).unwrap();
                h.set_device_minor(3).unwrap();
                h.set_mode(0o666);
            })
            .entry(EntryType::Block, "dev/loop300", b"", |h| {
                h.set_device_major(7).unwrap();
                h.set_device_minor(300).unwrap();
                h.set_mode(0o660);
                h.set_gid(6);
            })
            .entry(EntryType::Fifo, "run/pipe", b"", |h| h.set_mode(0o620))
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        let null = lstat(&root.join("dev/null"));
        assert!(null.file_type().is_char_device());
        assert_eq!((major(null.rdev()), minor(null.rdev())), (1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let block = lstat(&root.join("dev/loop300"));
        assert!(block.file_type().is_block_device());
        assert_eq!((major(block.rdev()), minor(block.rdev())), (7, 300));
        assert_eq!((block.mode() & 0o7777, block.gid()), (0o660, 6));
        let fifo = lstat(&root.join("run/pipe"));
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o620);
    }

    #[test]
    fn pax_xattrs_round_trip_but_overlay_ones_are_dropped() {
        let tar = LayerBuilder::new()
            .pax(&[
                ("SCHILY.xattr.user.origin", b"crius\0bin"),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ])
            .dir("etc/")
            .pax(&[("SCHILY.xattr.user.kind", b"file")])
            .entry(EntryType::Regular, "etc/conf", b"c", |h| {
                h.set_mode(0o4755);
                h.set_uid(1000);
            })
            .file("etc/plain", b"")
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        let etc = root.join("etc");
        assert_eq!(
            xattr::get(&etc, "user.origin").unwrap(),
            Some(b"crius\0bin".to_vec())
        );
        assert_eq!(xattr::get(&etc, "trusted.overlay.redirect").unwrap(), None);
        let conf = root.join("etc/conf");
        assert_eq!(
            xattr::get(&conf, "user.kind").unwrap(),
            Some(b"file".to_vec())
        );
        // The PAX records describe only the entry after them.
        assert_eq!(
            xattr::get(root.join("etc/plain"), "user.kind").unwrap(),
            None
        );
        // Setting owner and xattrs did not clear setuid.
        assert_eq!(lstat(&conf).mode() & 0o7777, 0o4755);
    }

    #[test]
    fn pax_mtime_is_exact() {
        let tar = LayerBuilder::new()
            .pax(&[("mtime", b"1234567890.5")])
            .file("half", b"")
            .pax(&[("mtime", b"-1.25")])
            .file("before-epoch", b"")
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        let half = lstat(&root.join("half"));
        assert_eq!(
            (half.mtime(), half.mtime_nsec()),
            (1_234_567_890, 500_000_000)
        );
        let before = lstat(&root.join("before-epoch"));
        assert_eq!((before.mtime(), before.mtime_nsec()), (-2, 750_000_000));
        assert_eq!(parse_pax_time(b"12"), Some(TimeSpec::new(12, 0)));
        for bad in [&b""[..], b".5", b"1e3", b"1.2.3", b"--1"] {
            assert_eq!(parse_pax_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn later_entries_replace_earlier_ones() {
        let tar = LayerBuilder::new()
            .file("p", b"file first")
            .dir("p/")
            .file("p/child", b"")
            .dir("q/")
            .file("q/child", b"")
            .file("q", b"file now")
            .entry(EntryType::Directory, "r/", b"", |h| h.set_mode(0o700))
            .file("r/kept", b"")
            .entry(EntryType::Directory, "r/", b"", |h| h.set_mode(0o751))
            .file("s", b"old")
            .file("s", b"new")
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        assert!(lstat(&root.join("p/child")).is_file());
        assert_eq!(fs::read(root.join("q")).unwrap(), b"file now");
        let r = lstat(&root.join("r"));
        assert_eq!(r.mode() & 0o7777, 0o751);
        assert!(lstat(&root.join("r/kept")).is_file());
        assert_eq!(fs::read(root.join("s")).unwrap(), b"new");
    }

    #[test]
    fn a_replaced_directory_keeps_no_pending_times() {
        let tar = LayerBuilder::new()
            .entry(EntryType::Directory, "a/", b"", |h| {
                h.set_mtime(1_100_000_000)
            })
            .dir("a/b/")
            .entry(EntryType::Regular, "a", b"file", |h| {
                h.set_mtime(1_300_000_000)
            })
            .finish();
        let (_dir, root) = unpack_ok(&tar);
        let a = lstat(&root.join("a"));
        assert!(a.is_file());
        assert_eq!(a.mtime(), 1_300_000_000);
    }

    #[test]
    fn dotdot_paths_are_rejected() {
        assert_unsafe(
            &LayerBuilder::new().file("../x", b"").finish(),
            "../x",
            "`..`",
        );
        let dir = assert_unsafe(
            &LayerBuilder::new().file("a/../../x", b"").finish(),
            "a/../../x",
            "`..`",
        );
        assert!(!dir.path().join("x").exists());
    }

    #[test]
    fn absolute_paths_are_rejected() {
        assert_unsafe(
            &LayerBuilder::new().file("/abs", b"").finish(),
            "/abs",
            "absolute",
        );
        assert_unsafe(&LayerBuilder::new().dir("/").finish(), "/", "absolute");
    }

    #[test]
    fn paths_through_a_symlink_are_rejected() {
        let outside = tempfile::tempdir().unwrap();
        let tar = LayerBuilder::new()
            .link(EntryType::Symlink, "etc", outside.path().to_str().unwrap())
            .file("etc/passwd", b"root::0:0::/:/bin/sh")
            .finish();
        assert_unsafe(&tar, "etc/passwd", "symlink");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        let tar = LayerBuilder::new()
            .link(EntryType::Symlink, "up", "..")
            .dir("up/sibling/")
            .finish();
        let dir = assert_unsafe(&tar, "up/sibling/", "symlink");
        assert!(!dir.path().join("sibling").exists());
        // The conversions resolve parents the same way.
        let tar = LayerBuilder::new()
            .link(EntryType::Symlink, "etc", outside.path().to_str().unwrap())
            .file("etc/.wh.passwd", b"")
            .finish();
        assert_unsafe(&tar, "etc/.wh.passwd", "symlink");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn escaping_or_dangling_hard_links_are_rejected() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"s").unwrap();
        let cases = [
            LayerBuilder::new()
                .link(EntryType::Link, "h", "../../etc/passwd")
                .finish(),
            LayerBuilder::new()
                .link(EntryType::Link, "h", "/etc/passwd")
                .finish(),
            LayerBuilder::new()
                .link(EntryType::Link, "h", "missing")
                .finish(),
            LayerBuilder::new()
                .dir("d/")
                .link(EntryType::Link, "h", "d")
                .finish(),
            LayerBuilder::new()
                .link(EntryType::Symlink, "out", outside.path().to_str().unwrap())
                .link(EntryType::Link, "h", "out/secret")
                .finish(),
        ];
        for tar in &cases {
            let dir = assert_unsafe(tar, "h", "hard link");
            assert!(fs::symlink_metadata(dir.path().join("fs/h")).is_err());
        }
        assert_eq!(lstat(&outside.path().join("secret")).nlink(), 1);
    }

    #[test]
    fn whiteouts_of_dot_names_and_non_directory_roots_are_rejected() {
        assert_unsafe(
            &LayerBuilder::new().file("a/.wh...", b"").finish(),
            "a/.wh...",
            "whiteout",
        );
        assert_unsafe(
            &LayerBuilder::new().file(".wh..", b"").finish(),
            ".wh..",
            "whiteout",
        );
        assert_unsafe(
            &LayerBuilder::new().file(".wh.", b"").finish(),
            ".wh.",
            "whiteout",
        );
        assert_unsafe(&LayerBuilder::new().file("./", b"").finish(), "./", "root");
    }

    #[test]
    fn unsupported_and_malformed_entries_are_errors() {
        let tar = LayerBuilder::new()
            .entry(EntryType::new(b'V'), "volume", b"", |_| {})
            .finish();
        let (_dir, _root, result) = unpack(&tar);
        assert!(
            matches!(result, Err(SnapshotError::InvalidEntry { ref entry, .. }) if entry == "volume"),
            "{result:?}"
        );
        let tar = LayerBuilder::new()
            .entry(EntryType::Regular, "bad-mode", b"", |h| {
                h.as_old_mut().mode = *b"zzzzzzz\0"
            })
            .finish();
        let (_dir, _root, result) = unpack(&tar);
        assert!(
            matches!(result, Err(SnapshotError::InvalidEntry { ref entry, .. }) if entry == "bad-mode"),
            "{result:?}"
        );
    }

    #[test]
    fn a_truncated_tar_is_an_error() {
        let tar = LayerBuilder::new()
            .file("f", &[1; 2000])
            .file("g", b"g")
            .finish();
        for cut in [300, 512 + 700, 512 + 2048 + 100] {
            let (_dir, _root, result) = unpack(&tar[..cut]);
            assert!(
                matches!(result, Err(SnapshotError::Tar { .. })),
                "cut at {cut}: {result:?}"
            );
        }
    }

    #[test]
    fn deep_trees_are_measured_without_recursion() {
        let dir = tempfile::tempdir().unwrap();
        let mut path = dir.path().to_path_buf();
        for _ in 0..1000 {
            path.push("d");
        }
        // Shorter than PATH_MAX: 1000 × "/d".
        fs::create_dir_all(&path).unwrap();
        fs::write(path.join("leaf"), b"12345").unwrap();
        let usage = tree_usage(dir.path()).unwrap();
        assert_eq!(
            usage,
            LayerUsage {
                bytes: 5,
                inodes: 1001
            }
        );
    }
}

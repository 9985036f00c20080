//! Container root filesystems: an overlay of the image's snapshots (read-only lower
//! layers) and the container's own writable upper directory.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::SnapshotError;

/// Mounts at `target` an overlay of `lowers` (topmost layer first) under the writable
/// `upper` (with its overlayfs `work` directory on the same filesystem).
pub fn mount_overlay(
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), SnapshotError> {
    for dir in [upper, work, target] {
        std::fs::create_dir_all(dir).map_err(|source| SnapshotError::Io {
            op: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let lowerdir = lowers
        .iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={},index=off",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .map_err(|errno| SnapshotError::Io {
        op: "mount the overlay rootfs at",
        path: target.to_path_buf(),
        source: std::io::Error::from(errno),
    })
}

/// Unmounts `target`; a target that is not mounted (or gone) is not an error.
pub fn unmount(target: &Path) -> Result<(), SnapshotError> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(()),
        Err(errno) => Err(SnapshotError::Io {
            op: "unmount",
            path: target.to_path_buf(),
            source: std::io::Error::from(errno),
        }),
    }
}

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

/// Mounts at `target` the image made of `lowers` (topmost first), read-only: an image
/// volume. Overlayfs needs two lower layers when it has no upper one, so a one-layer
/// image is a read-only bind mount of its snapshot.
pub fn mount_read_only(lowers: &[PathBuf], target: &Path) -> Result<(), SnapshotError> {
    std::fs::create_dir_all(target).map_err(|source| SnapshotError::Io {
        op: "create",
        path: target.to_path_buf(),
        source,
    })?;
    let failed = |op: &'static str| {
        move |errno: Errno| SnapshotError::Io {
            op,
            path: target.to_path_buf(),
            source: std::io::Error::from(errno),
        }
    };
    match lowers {
        [] => Err(failed("mount an image without layers at")(Errno::EINVAL)),
        [only] => {
            mount(
                Some(only),
                target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(failed("bind the image layer at"))?;
            let read_only = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            mount(None::<&str>, target, None::<&str>, read_only, None::<&str>).map_err(|errno| {
                let _ = unmount(target);
                failed("make read-only the image volume at")(errno)
            })
        }
        _ => {
            let lowerdir = lowers
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(":");
            let options = format!("lowerdir={lowerdir}");
            mount(
                Some("overlay"),
                target,
                Some("overlay"),
                MsFlags::MS_RDONLY,
                Some(options.as_str()),
            )
            .map_err(failed("mount the image volume at"))
        }
    }
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

//! Image volumes (CRI `Mount.image`, Kubernetes' ImageVolume): an image's filesystem
//! mounted read-only into a container, optionally one subdirectory of it. The image's
//! snapshots are mounted under the container's bundle (`volumes/<mount index>`), and the
//! container bind-mounts that like any host path; RemoveContainer unmounts them.

use std::path::{Component, Path, PathBuf};

use super::api;
use super::rollback::Rollback;
use super::{Cri, CriError};
use crate::snapshot::rootfs::{mount_read_only, unmount};

/// An image volume made ready for one mount of the container.
pub(super) struct ImageVolume {
    /// What the container bind-mounts: the mounted image, or its sub path.
    pub host_path: PathBuf,
    /// The image as the request named it, and its id.
    pub image: String,
    pub image_id: String,
}

impl Cri {
    /// Mounts the image of every image mount in `mounts`; the result is aligned with
    /// `mounts` (`None` for host-path mounts). Each mount registers its undo step.
    pub(super) fn mount_image_volumes(
        &self,
        mounts: &[api::Mount],
        bundle: &Path,
        rollback: &mut Rollback,
    ) -> Result<Vec<Option<ImageVolume>>, CriError> {
        let mut volumes = Vec::with_capacity(mounts.len());
        for (index, mount) in mounts.iter().enumerate() {
            let Some(requested) = mount.image.as_ref().filter(|image| !image.image.is_empty())
            else {
                volumes.push(None);
                continue;
            };
            const FIELD: &str = "config.mounts";
            if !mount.readonly {
                return Err(CriError::invalid(
                    FIELD,
                    format!("[{index}].readonly: an image volume is always read-only"),
                ));
            }
            if !mount.host_path.is_empty() {
                return Err(CriError::invalid(
                    FIELD,
                    format!("[{index}]: host_path and image are mutually exclusive"),
                ));
            }
            let image = self
                .images
                .find(&requested.image)
                .ok_or_else(|| CriError::NotFound {
                    kind: "image",
                    id: requested.image.clone(),
                })?;
            let sub_path = relative_sub_path(&mount.image_sub_path).ok_or_else(|| {
                CriError::invalid(
                    FIELD,
                    format!(
                        "[{index}].image_sub_path {:?} must be a relative path inside the image",
                        mount.image_sub_path
                    ),
                )
            })?;
            let lowers = self.images.image_lowers(&image)?;
            let target = bundle.join("volumes").join(index.to_string());
            mount_read_only(&lowers, &target)?;
            let mounted = target.clone();
            rollback.push("an image volume", move || {
                unmount(&mounted).map_err(|err| err.to_string())
            });
            let host_path = target.join(&sub_path);
            if !host_path.is_dir() {
                return Err(CriError::invalid(
                    FIELD,
                    format!(
                        "[{index}].image_sub_path {:?} is not a directory of image {}",
                        mount.image_sub_path, requested.image
                    ),
                ));
            }
            volumes.push(Some(ImageVolume {
                host_path,
                image: requested.image.clone(),
                image_id: image.id,
            }));
        }
        Ok(volumes)
    }
}

/// Unmounts the image volumes of the container whose bundle is `bundle`.
pub(super) fn unmount_image_volumes(bundle: &Path) -> Result<(), CriError> {
    let Ok(entries) = std::fs::read_dir(bundle.join("volumes")) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        unmount(&entry.path())?;
    }
    Ok(())
}

/// `sub_path` as a path that stays inside the image (empty: the image's root).
fn relative_sub_path(sub_path: &str) -> Option<PathBuf> {
    let path = Path::new(sub_path);
    path.components()
        .all(|component| matches!(component, Component::Normal(_) | Component::CurDir))
        .then(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::relative_sub_path;

    #[test]
    fn sub_paths_stay_inside_the_image() {
        assert!(relative_sub_path("").is_some());
        assert!(relative_sub_path("etc").is_some());
        assert!(relative_sub_path("usr/share/./doc").is_some());
        assert!(relative_sub_path("/etc").is_none());
        assert!(relative_sub_path("../etc").is_none());
        assert!(relative_sub_path("etc/../../x").is_none());
    }
}

//! ListImages, ImageStatus and ImageFsInfo: what kubelet's image manager and image GC
//! read about the images on the node.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::api::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoResponse, ImageSpec,
    ImageStatusRequest, ImageStatusResponse, Int64Value, ListImagesRequest, ListImagesResponse,
    UInt64Value,
};
use super::{requested_image, Cri, CriError};
use crate::store::ImageRecord;

impl Cri {
    pub(super) fn list_images(&self, request: &ListImagesRequest) -> ListImagesResponse {
        let wanted = request
            .filter
            .as_ref()
            .and_then(|filter| filter.image.as_ref())
            .map(|spec| spec.image.as_str())
            .filter(|name| !name.is_empty());
        let images = match wanted {
            Some(key) => self.images.find(key).into_iter().collect(),
            None => self.images.list(),
        };
        ListImagesResponse {
            images: images.iter().map(cri_image).collect(),
        }
    }

    /// A missing image is an empty response, not an error: kubelet asks before pulling.
    pub(super) async fn image_status(
        &self,
        request: &ImageStatusRequest,
    ) -> Result<ImageStatusResponse, CriError> {
        let key = requested_image(request.image.as_ref())?;
        let Some(record) = self.images.find(key) else {
            return Ok(ImageStatusResponse::default());
        };
        let mut info = std::collections::HashMap::new();
        if request.verbose {
            let config = self.images.config_bytes(&record).await?;
            let config: serde_json::Value =
                serde_json::from_slice(&config).map_err(|err| CriError::Internal {
                    what: "reading the image config",
                    reason: err.to_string(),
                })?;
            let details = json!({
                "id": record.id,
                "manifestDigest": record.manifest_digest,
                "manifestMediaType": record.manifest_media_type,
                "chainIds": record.layers.iter().map(|layer| &layer.chain_id).collect::<Vec<_>>(),
                "layers": record.layers.iter().map(|layer| json!({
                    "digest": layer.digest, "size": layer.size, "mediaType": layer.media_type, "diffId": layer.diff_id,
                })).collect::<Vec<_>>(),
                "imageSpec": config,
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(ImageStatusResponse {
            image: Some(cri_image(&record)),
            info,
        })
    }

    pub(super) fn image_fs_info(&self) -> ImageFsInfoResponse {
        let usage = self.images.usage();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as i64)
            .unwrap_or(1);
        ImageFsInfoResponse {
            image_filesystems: vec![FilesystemUsage {
                timestamp,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: self.images.root().display().to_string(),
                }),
                used_bytes: Some(UInt64Value { value: usage.bytes }),
                inodes_used: Some(UInt64Value {
                    value: usage.inodes,
                }),
            }],
            // Writable container layers live on the same filesystem as the images, and the
            // CRI asks runtimes to leave this empty in that case.
            container_filesystems: vec![],
        }
    }
}

/// An image record as kubelet sees it.
fn cri_image(record: &ImageRecord) -> Image {
    let (uid, username) = user_of(&record.user);
    Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid: uid.map(|value| Int64Value { value }),
        username,
        spec: Some(ImageSpec {
            image: record.id.clone(),
            ..ImageSpec::default()
        }),
        pinned: false,
    }
}

/// Splits the config's `USER` (`uid`, `uid:gid`, `name` or `name:group`) the way kubelet
/// expects it: a numeric user is a uid, anything else a username.
fn user_of(user: &str) -> (Option<i64>, String) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::user_of;

    #[test]
    fn config_user_becomes_uid_or_username() {
        assert_eq!(user_of(""), (None, String::new()));
        assert_eq!(user_of("1000"), (Some(1000), String::new()));
        assert_eq!(user_of("1000:1000"), (Some(1000), String::new()));
        assert_eq!(user_of("app"), (None, "app".to_string()));
        assert_eq!(user_of("app:staff"), (None, "app".to_string()));
    }
}

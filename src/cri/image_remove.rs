//! RemoveImage: by id, tag or digest; removes every name of the image; idempotent.

use super::api::{RemoveImageRequest, RemoveImageResponse};
use super::{Cri, CriError};

impl Cri {
    pub(super) async fn remove_image(
        &self,
        request: &RemoveImageRequest,
    ) -> Result<RemoveImageResponse, CriError> {
        let key = request
            .image
            .as_ref()
            .map(|spec| spec.image.as_str())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| CriError::invalid("image.image", "is required"))?;
        tracing::Span::current().record("name", key);
        if let Some(removed) = self.images.remove(key).await? {
            tracing::info!(id = %removed.id, "image removed");
        }
        Ok(RemoveImageResponse {})
    }
}

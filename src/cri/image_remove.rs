//! RemoveImage: by id, tag or digest; removes every name of the image; idempotent.

use super::api::{RemoveImageRequest, RemoveImageResponse};
use super::{requested_image, Cri, CriError};

impl Cri {
    pub(super) async fn remove_image(
        &self,
        request: &RemoveImageRequest,
    ) -> Result<RemoveImageResponse, CriError> {
        let key = requested_image(request.image.as_ref())?;
        if let Some(removed) = self.images.remove(key).await? {
            tracing::info!(id = %removed.id, "image removed");
        }
        Ok(RemoveImageResponse {})
    }
}

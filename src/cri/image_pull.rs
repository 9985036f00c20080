//! PullImage: resolve, download and unpack an image; answer with its id.

use super::api::{AuthConfig, PullImageRequest, PullImageResponse};
use super::{Cri, CriError};
use crate::image::Credentials;

impl Cri {
    pub(super) async fn pull_image(
        &self,
        request: PullImageRequest,
    ) -> Result<PullImageResponse, CriError> {
        let image = request
            .image
            .as_ref()
            .map(|spec| spec.image.as_str())
            .filter(|name| !name.is_empty())
            .ok_or_else(|| CriError::invalid("image.image", "is required"))?;
        tracing::Span::current().record("name", image);
        let credentials = request.auth.map(credentials).unwrap_or_default();
        let record = self.images.pull(image, &credentials).await?;
        Ok(PullImageResponse {
            image_ref: record.id,
        })
    }
}

fn credentials(auth: AuthConfig) -> Credentials {
    Credentials {
        username: auth.username,
        password: auth.password,
        auth: auth.auth,
        identity_token: auth.identity_token,
        registry_token: auth.registry_token,
    }
}

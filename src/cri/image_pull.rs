//! PullImage (CRI) and Pull (crius.v1, with progress): resolve, download and unpack an
//! image; answer with its id.

use tokio::sync::mpsc;

use super::api::{AuthConfig, PullImageRequest, PullImageResponse};
use super::{crius_api, requested_image, Cri, CriError};
use crate::image::progress::{self, LayerState};
use crate::image::Credentials;

impl Cri {
    pub(super) async fn pull_image(
        &self,
        request: PullImageRequest,
    ) -> Result<PullImageResponse, CriError> {
        let image = requested_image(request.image.as_ref())?;
        let credentials = request.auth.map(credentials).unwrap_or_default();
        let record = self
            .images
            .pull(image, &credentials, &progress::unwatched())
            .await?;
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

/// How often a watched pull reports progress.
const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl Cri {
    /// crius.v1 Pull: pulls like PullImage and streams per-layer progress; the last
    /// message carries the image id, or the stream ends with the pull's error.
    pub(super) fn pull_with_progress(
        &self,
        request: crius_api::PullRequest,
    ) -> Result<mpsc::Receiver<Result<crius_api::PullProgress, CriError>>, CriError> {
        if request.image.is_empty() {
            return Err(CriError::invalid("image", "is required"));
        }
        let credentials = Credentials {
            username: request.username,
            password: request.password,
            ..Credentials::default()
        };
        let (sender, receiver) = mpsc::channel(8);
        let images = self.images.clone();
        tokio::spawn(async move {
            let progress = progress::unwatched();
            let mut watcher = progress.subscribe();
            let pull = images.pull(&request.image, &credentials, &progress);
            tokio::pin!(pull);
            let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
            loop {
                tokio::select! {
                    result = &mut pull => {
                        let last = result
                            .map(|record| message(&watcher.borrow_and_update(), record.id))
                            .map_err(CriError::from);
                        let _ = sender.send(last).await;
                        break;
                    }
                    _ = ticker.tick() => {
                        if watcher.has_changed().unwrap_or(false) {
                            let update = message(&watcher.borrow_and_update(), String::new());
                            // A client that went away cancels nothing: the pull finishes
                            // and the image is there for the next caller.
                            let _ = sender.send(Ok(update)).await;
                        }
                    }
                }
            }
        });
        Ok(receiver)
    }
}

fn message(layers: &[progress::LayerProgress], image_id: String) -> crius_api::PullProgress {
    crius_api::PullProgress {
        layers: layers
            .iter()
            .map(|layer| crius_api::LayerProgress {
                digest: layer.digest.clone(),
                size: layer.size,
                downloaded: layer.downloaded,
                state: match layer.state {
                    LayerState::Waiting => crius_api::LayerState::Waiting,
                    LayerState::Downloading => crius_api::LayerState::Downloading,
                    LayerState::Unpacking => crius_api::LayerState::Unpacking,
                    LayerState::Done => crius_api::LayerState::Done,
                    LayerState::Exists => crius_api::LayerState::Exists,
                }
                .into(),
            })
            .collect(),
        image_id,
    }
}

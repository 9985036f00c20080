//! The pull pipeline.
//!
//! resolve (first endpoint that serves the manifest) → platform manifest from an index →
//! config → every layer at once, at most `max_concurrent_downloads` downloading, each
//! unpacked into its snapshot as soon as its blob is verified → the image record.
//! Data that a failed pull wrote is collected before the error is returned.

use futures_util::StreamExt;
use oci_spec::image::Descriptor;
use tokio::sync::Semaphore;

use super::manifest::{config_user, parse_config, Manifest, Platform};
use super::progress::{update_layer, LayerProgress, LayerState, Progress};
use super::reference::Reference;
use super::registry::{Credentials, FetchError, RemoteRepository};
use super::{ContentError, ImageError, ImageManager};
use crate::snapshot::{chain_ids, Compression};
use crate::store::images::LayerRecord;
use crate::store::ImageRecord;

/// What every download of one pull shares.
struct PullSession<'a> {
    remote: &'a RemoteRepository,
    image: &'a str,
    /// Bounds the layers downloading at once.
    downloads: &'a Semaphore,
    progress: &'a Progress,
}

impl ImageManager {
    /// Pulls `image` (any reference form) and returns its record. Concurrent pulls that
    /// share layers download and unpack each shared layer once.
    /// `progress` receives the per-layer state as the pull goes.
    pub async fn pull(
        &self,
        image: &str,
        credentials: &Credentials,
        progress: &Progress,
    ) -> Result<ImageRecord, ImageError> {
        let reference = Reference::parse(image)?;
        let result = {
            let _shared = self.gc_lock.read().await;
            self.pull_reference(&reference, credentials, progress).await
        };
        if let Err(err) = &result {
            tracing::info!(image = %reference, "pull failed, discarding its data: {err}");
            if let Err(gc_err) = self.collect_garbage().await {
                tracing::warn!("cleaning up after a failed pull: {gc_err}");
            }
        }
        result
    }

    async fn pull_reference(
        &self,
        reference: &Reference,
        credentials: &Credentials,
        progress: &Progress,
    ) -> Result<ImageRecord, ImageError> {
        let image = reference.to_string();
        let (remote, top_bytes, top_digest) = self.resolve(reference, credentials).await?;
        tracing::debug!(%image, endpoint = %remote.endpoint(), digest = %top_digest, "resolved");
        self.store_blob(&top_digest, &top_bytes).await?;

        let (manifest_bytes, manifest_digest) = match parse_manifest(&image, &top_bytes)? {
            Manifest::Image(_) => (top_bytes, top_digest.clone()),
            Manifest::Index(index) => {
                let platform = Platform::host();
                let descriptor =
                    platform
                        .select(&index)
                        .ok_or_else(|| ImageError::NoMatchingPlatform {
                            image: image.clone(),
                            platform: platform.to_string(),
                        })?;
                let wanted = descriptor.digest().to_string();
                let (bytes, digest) = remote
                    .manifest(&wanted)
                    .await
                    .map_err(|err| blob_error(&image, err))?;
                if digest != wanted {
                    return Err(bad_content(
                        &image,
                        format!("manifest {wanted} was served as {digest}"),
                    ));
                }
                self.store_blob(&digest, &bytes).await?;
                (bytes, digest)
            }
        };
        let Manifest::Image(manifest) = parse_manifest(&image, &manifest_bytes)? else {
            return Err(bad_content(
                &image,
                format!("index entry {manifest_digest} is another index"),
            ));
        };
        let manifest_media_type = manifest
            .media_type()
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string());

        let downloads = Semaphore::new(self.max_concurrent_downloads);
        let session = PullSession {
            remote: &remote,
            image: &image,
            downloads: &downloads,
            progress,
        };
        let config_descriptor = manifest.config();
        let config_digest = config_descriptor.digest().to_string();
        if !self.content.contains(&config_digest) {
            self.download(&session, config_descriptor).await?;
        }
        let config_bytes = self.content.read(&config_digest).await?;
        let config =
            parse_config(&config_bytes).map_err(|err| bad_content(&image, err.to_string()))?;
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != manifest.layers().len() {
            return Err(bad_content(
                &image,
                format!(
                    "manifest has {} layers but its config lists {} diff ids",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            ));
        }
        let chains = chain_ids(diff_ids);
        progress.send_replace(
            manifest
                .layers()
                .iter()
                .map(|layer| LayerProgress {
                    digest: layer.digest().to_string(),
                    size: layer.size(),
                    downloaded: 0,
                    state: LayerState::Waiting,
                })
                .collect(),
        );
        let layer_fetches = manifest.layers().iter().zip(diff_ids).zip(&chains).map(
            |((layer, diff_id), chain_id)| self.fetch_layer(&session, layer, diff_id, chain_id),
        );
        let layers = futures_util::future::try_join_all(layer_fetches).await?;

        let size = config_descriptor.size() + layers.iter().map(|layer| layer.size).sum::<u64>();
        let user = config_user(&config);
        let record = ImageRecord {
            id: config_digest,
            repo_tags: reference.tagged().into_iter().collect(),
            repo_digests: vec![reference.with_digest(&top_digest)],
            manifest_digest,
            manifest_media_type,
            size,
            layers,
            user,
        };
        let record = self.store.put(record)?;
        tracing::info!(%image, id = %record.id, "pulled");
        Ok(record)
    }

    /// Asks each endpoint in turn for the reference's manifest; the first that serves it
    /// is used for everything else of this pull.
    async fn resolve(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<(RemoteRepository, bytes::Bytes, String), ImageError> {
        let image = reference.to_string();
        let mut failures: Vec<(String, FetchError)> = Vec::new();
        for endpoint in self.registries.endpoints(reference) {
            let remote = match self.registries.connect(&endpoint, reference, credentials) {
                Ok(remote) => remote,
                Err(err) => return Err(ImageError::InvalidCredentials { image, source: err }),
            };
            match remote.manifest(reference.manifest_reference()).await {
                Ok((bytes, digest)) => {
                    if let Some(pinned) = reference.digest() {
                        if digest != pinned {
                            return Err(bad_content(
                                &image,
                                format!("{endpoint} served {digest} for {pinned}"),
                            ));
                        }
                    }
                    return Ok((remote, bytes, digest));
                }
                Err(err) => {
                    tracing::debug!(%image, %endpoint, "{err}");
                    failures.push((endpoint.to_string(), err));
                }
            }
        }
        Err(resolve_error(image, failures))
    }

    async fn fetch_layer(
        &self,
        pull: &PullSession<'_>,
        layer: &Descriptor,
        diff_id: &str,
        chain_id: &str,
    ) -> Result<LayerRecord, ImageError> {
        let (image, progress) = (pull.image, pull.progress);
        let digest = layer.digest().to_string();
        let media_type = layer.media_type().to_string();
        let lock = self.layer_lock(chain_id);
        let _single_flight = lock.lock().await;
        let have_blob = self.content.contains(&digest);
        if have_blob && self.snapshots.exists(chain_id) {
            update_layer(progress, &digest, |layer| {
                layer.downloaded = layer.size;
                layer.state = LayerState::Exists;
            });
        } else {
            let compression = Compression::from_media_type(&media_type)?;
            if !have_blob {
                let _permit = pull
                    .downloads
                    .acquire()
                    .await
                    .map_err(|_| ImageError::Task("download queue"))?;
                update_layer(progress, &digest, |layer| {
                    layer.state = LayerState::Downloading
                });
                self.download(pull, layer).await?;
            }
            if !self.snapshots.exists(chain_id) {
                update_layer(progress, &digest, |layer| {
                    layer.state = LayerState::Unpacking
                });
                self.unpack_blob(image, &digest, compression, diff_id, chain_id)
                    .await?;
            }
            update_layer(progress, &digest, |layer| {
                layer.downloaded = layer.size;
                layer.state = LayerState::Done;
            });
        }
        Ok(LayerRecord {
            digest,
            size: layer.size(),
            media_type,
            diff_id: diff_id.to_string(),
            chain_id: chain_id.to_string(),
        })
    }

    /// Unpacks the stored blob `digest` as snapshot `chain_id`, checking its diff ID.
    pub(super) async fn unpack_blob(
        &self,
        image: &str,
        digest: &str,
        compression: Compression,
        diff_id: &str,
        chain_id: &str,
    ) -> Result<(), ImageError> {
        let blob = self.content.path(digest)?;
        let snapshots = self.snapshots.clone();
        let (chain, diff) = (chain_id.to_string(), diff_id.to_string());
        tokio::task::spawn_blocking(move || -> Result<(), ImageError> {
            let file = std::fs::File::open(&blob).map_err(|source| ContentError::Io {
                action: "open",
                path: blob.clone(),
                source,
            })?;
            snapshots.unpack_layer(&chain, std::io::BufReader::new(file), compression, &diff)?;
            Ok(())
        })
        .await
        .map_err(|_| ImageError::Task("layer unpack"))?
        .map_err(|err| match err {
            ImageError::Snapshot(source) if source.is_bad_layer() => {
                bad_content(image, source.to_string())
            }
            other => other,
        })
    }

    /// Streams a blob into the content store, verifying size and digest.
    async fn download(
        &self,
        pull: &PullSession<'_>,
        descriptor: &Descriptor,
    ) -> Result<(), ImageError> {
        let (image, progress) = (pull.image, pull.progress);
        let digest = descriptor.digest().to_string();
        let mut stream = pull
            .remote
            .blob(&digest)
            .await
            .map_err(|err| blob_error(image, err))?;
        let mut writer = self.content.writer(&digest, descriptor.size()).await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| blob_error(image, err))?;
            writer
                .write(&chunk)
                .await
                .map_err(|err| content_error(image, err))?;
            let written = writer.written();
            update_layer(progress, &digest, |layer| layer.downloaded = written);
        }
        writer
            .commit()
            .await
            .map_err(|err| content_error(image, err))
    }

    async fn store_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        if !self.content.contains(digest) {
            self.content.write_all(digest, bytes).await?;
        }
        Ok(())
    }
}

fn parse_manifest(image: &str, bytes: &[u8]) -> Result<Manifest, ImageError> {
    Manifest::parse(bytes).map_err(|err| bad_content(image, err.to_string()))
}

fn bad_content(image: &str, detail: String) -> ImageError {
    ImageError::BadContent {
        image: image.to_string(),
        detail,
    }
}

/// Wrong bytes from the registry are the image's fault, not the store's.
fn content_error(image: &str, err: ContentError) -> ImageError {
    match err {
        ContentError::DigestMismatch { .. } | ContentError::SizeMismatch { .. } => {
            bad_content(image, err.to_string())
        }
        other => ImageError::Content(other),
    }
}

/// A failure after the manifest was served: the endpoint is known to have the image.
fn blob_error(image: &str, err: FetchError) -> ImageError {
    let image = image.to_string();
    match err {
        FetchError::NotFound { .. } => ImageError::BadContent {
            image,
            detail: format!("the registry lacks content its manifest references: {err}"),
        },
        FetchError::Corrupt { .. } => ImageError::BadContent {
            image,
            detail: err.to_string(),
        },
        FetchError::Unauthorized { .. } => ImageError::Unauthorized { image, source: err },
        FetchError::Stalled { .. } => ImageError::Stalled { image, source: err },
        FetchError::Unreachable { .. } | FetchError::Protocol { .. } => ImageError::Unavailable {
            image,
            detail: err.to_string(),
        },
        FetchError::Credentials { .. } => ImageError::InvalidCredentials { image, source: err },
    }
}

/// Every endpoint failed. An endpoint that answered says more than one that could not be
/// reached: "unauthorized" from any wins, then "not found" from any, then a stall; only
/// when nothing answered is the image unavailable. The message lists every endpoint.
fn resolve_error(image: String, failures: Vec<(String, FetchError)>) -> ImageError {
    let detail = failures
        .iter()
        .map(|(_, err)| err.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let failures = failures.into_iter().map(|(_, err)| err);
    let mut unauthorized = None;
    let mut not_found = false;
    let mut stalled = None;
    for err in failures {
        match err {
            FetchError::Unauthorized { .. } if unauthorized.is_none() => unauthorized = Some(err),
            FetchError::NotFound { .. } => not_found = true,
            FetchError::Stalled { .. } if stalled.is_none() => stalled = Some(err),
            // A registry that serves corrupt manifests is as bad as none.
            _ => {}
        }
    }
    if let Some(source) = unauthorized {
        ImageError::Unauthorized { image, source }
    } else if not_found {
        ImageError::NotFound { image, detail }
    } else if let Some(source) = stalled {
        ImageError::Stalled { image, source }
    } else {
        ImageError::Unavailable { image, detail }
    }
}

//! The CRI gRPC services: kubelet's and crictl's way into crius.
//!
//! - [`api`]: types and service traits generated from `proto/cri/api.proto` (runtime.v1).
//! - [`crius_api`]: crius's own API for its CLI (`proto/crius/v1/images.proto`).
//! - [`service`]: the only trait implementations. Each RPC goes through one wrapper that
//!   opens a span, logs the outcome and maps [`CriError`] to a gRPC status; the RPC's
//!   work is a method of [`Cri`] in the file of its group (`runtime_info`, later
//!   `sandbox_run`, `container_create`, `image_pull`, ...).
//! - [`client`]: a client for the same socket, shared by the CLI, tests and benchmarks.

pub mod api;
pub mod client;
pub mod crius_api;
mod error;
mod image_archive;
mod image_pull;
mod image_query;
mod image_remove;
mod runtime_info;
pub mod service;

use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::image::{ImageError, ImageManager};

pub use error::CriError;

/// Name reported as `runtime_name` by Version, and by `crictl version`.
pub const RUNTIME_NAME: &str = "crius";
/// The CRI API version crius serves.
pub const RUNTIME_API_VERSION: &str = "v1";

/// Everything the RPCs work on. One instance per daemon, shared by both gRPC services.
pub struct Cri {
    config: Config,
    images: Arc<ImageManager>,
    /// Pod CIDR(s) kubelet last sent through UpdateRuntimeConfig; empty until then.
    pod_cidr: Mutex<String>,
}

/// The image an image RPC names (`image.image`), which must not be empty; recorded as
/// the RPC span's `name`.
fn requested_image(spec: Option<&api::ImageSpec>) -> Result<&str, CriError> {
    let image = spec
        .map(|spec| spec.image.as_str())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| CriError::invalid("image.image", "is required"))?;
    tracing::Span::current().record("name", image);
    Ok(image)
}

impl Cri {
    /// Opens the stores under the config's root and recovers from an unclean stop.
    pub async fn open(config: Config) -> Result<Cri, ImageError> {
        let images = ImageManager::open(&config).await?;
        Ok(Cri {
            config,
            images,
            pod_cidr: Mutex::new(String::new()),
        })
    }
}

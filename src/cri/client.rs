//! A CRI client over a unix socket, as kubelet and crictl connect: used by the `crius`
//! CLI, the integration tests and the benchmarks, so they all speak to the daemon the way
//! a real node does.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::api::image_service_client::ImageServiceClient;
use super::api::runtime_service_client::RuntimeServiceClient;
use super::crius_api::images_client::ImagesClient;
use super::service::MAX_MESSAGE_BYTES;

/// The endpoint crius serves when its config does not say otherwise.
pub const DEFAULT_ADDRESS: &str = "unix:///run/crius/crius.sock";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unsupported address {0:?}: use unix:///path/to/socket or an absolute socket path")]
    Address(String),
    #[error("cannot connect to {address}: {reason} (is criusd running?)")]
    Connect { address: String, reason: String },
}

/// Both CRI service clients, and crius's own image API, over one HTTP/2 connection.
#[derive(Clone)]
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
    /// crius.v1.Images: pull with progress, load, save.
    pub crius_images: ImagesClient<Channel>,
}

impl CriClient {
    /// Connects to `address` (`unix:///run/crius/crius.sock` or `/run/crius/crius.sock`)
    /// and fails now, not at the first call, when nothing listens there.
    pub async fn connect(address: &str) -> Result<CriClient, ClientError> {
        let socket = socket_path(address)?;
        // The URI is required by the HTTP layer but never dialled: the connector below
        // always opens the unix socket.
        let endpoint = Endpoint::from_static("http://crius.sock");
        let channel =
            endpoint
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?))
                    }
                }))
                .await
                .map_err(|err| ClientError::Connect {
                    address: address.to_string(),
                    reason: error_chain(&err),
                })?;
        Ok(CriClient {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            image: ImageServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            crius_images: ImagesClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        })
    }
}

fn socket_path(address: &str) -> Result<PathBuf, ClientError> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    if Path::new(path).is_absolute() {
        Ok(PathBuf::from(path))
    } else {
        Err(ClientError::Address(address.to_string()))
    }
}

/// tonic's transport error hides the useful part (ENOENT, ECONNREFUSED) in its sources.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Layers often repeat their cause's text; say each thing once.
        let cause_text = cause.to_string();
        if !message.ends_with(&cause_text) {
            message = format!("{message}: {cause_text}");
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_and_without_scheme() {
        assert_eq!(
            socket_path("unix:///run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        assert_eq!(
            socket_path("/run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
        assert!(socket_path("relative.sock").is_err());
    }
}

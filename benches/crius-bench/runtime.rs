//! One CRI runtime under test: its connection and the calls the scenarios make on it.
//!
//! Every call goes through [`Runtime::call`], which bounds it with a timeout and names
//! the runtime and RPC in its error, so a scenario reads as a plain sequence of calls.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crius::cri::api::{
    ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest, RemoveImageRequest,
    VersionRequest,
};
use crius::cri::client::CriClient;

use crate::error::BenchError;

/// Long enough for a cold pull of a large image on a slow disk; a runtime that takes
/// longer is broken, not slow, and a hung benchmark tells nobody anything.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a freshly started daemon may fail the Version call before it counts as broken.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// What ImageStatus says about a present image.
pub struct ImageInfo {
    pub id: String,
    /// Compressed size as the runtime reports it: what a pull transfers.
    pub size: u64,
}

pub struct Runtime {
    /// `crius` or `containerd`: names the runtime in output and in `--NAME-pid` options.
    pub name: &'static str,
    pub address: String,
    /// `runtime_name runtime_version` from the Version RPC.
    pub version: String,
    /// The daemon process, for memory scenarios.
    pub pid: Option<u32>,
    /// The daemon's root dir, to check that removed images leave the disk.
    pub root: Option<PathBuf>,
    client: CriClient,
}

impl Runtime {
    pub async fn connect(
        name: &'static str,
        address: &str,
        pid: Option<u32>,
        root: Option<PathBuf>,
    ) -> Result<Runtime, BenchError> {
        let client = CriClient::connect(address)
            .await
            .map_err(|source| BenchError::Connect {
                runtime: name,
                source,
            })?;
        let mut runtime = Runtime {
            name,
            address: address.to_string(),
            version: String::new(),
            pid,
            root,
            client,
        };
        // A daemon may listen before it serves: containerd's CRI plugin answers "server is
        // not initialized yet" for a moment after start-up.
        let deadline = Instant::now() + READY_TIMEOUT;
        let version = loop {
            let mut service = runtime.client.runtime.clone();
            match runtime
                .call("Version", service.version(VersionRequest::default()))
                .await
            {
                Ok(version) => break version,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        };
        runtime.version = format!("{} {}", version.runtime_name, version.runtime_version);
        Ok(runtime)
    }

    /// ImageStatus: `None` when the runtime does not have `image`.
    pub async fn image_status(&self, image: &str) -> Result<Option<ImageInfo>, BenchError> {
        let mut service = self.client.image.clone();
        let response = self
            .call(
                "ImageStatus",
                service.image_status(ImageStatusRequest {
                    image: Some(spec(image)),
                    verbose: false,
                }),
            )
            .await?;
        Ok(response.image.map(|image| ImageInfo {
            id: image.id,
            size: image.size,
        }))
    }

    pub async fn pull_image(&self, image: &str) -> Result<(), BenchError> {
        let mut service = self.client.image.clone();
        self.call(
            "PullImage",
            service.pull_image(PullImageRequest {
                image: Some(spec(image)),
                ..PullImageRequest::default()
            }),
        )
        .await?;
        Ok(())
    }

    pub async fn remove_image(&self, image: &str) -> Result<(), BenchError> {
        let mut service = self.client.image.clone();
        self.call(
            "RemoveImage",
            service.remove_image(RemoveImageRequest {
                image: Some(spec(image)),
            }),
        )
        .await?;
        Ok(())
    }

    /// ListImages without a filter; returns how many images the runtime has.
    pub async fn list_images(&self) -> Result<usize, BenchError> {
        let mut service = self.client.image.clone();
        let response = self
            .call(
                "ListImages",
                service.list_images(ListImagesRequest::default()),
            )
            .await?;
        Ok(response.images.len())
    }

    async fn call<T>(
        &self,
        call: &'static str,
        request: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, BenchError> {
        match tokio::time::timeout(CALL_TIMEOUT, request).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(BenchError::Rpc {
                runtime: self.name,
                call,
                status: Box::new(status),
            }),
            Err(_) => Err(BenchError::Timeout {
                runtime: self.name,
                call,
                limit: CALL_TIMEOUT,
            }),
        }
    }
}

fn spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_string(),
        ..ImageSpec::default()
    }
}

//! One CRI runtime under test: its connection and the calls the scenarios make on it.
//!
//! Every call goes through [`Runtime::call`], which bounds it with a timeout and names
//! the runtime and RPC in its error, so a scenario reads as a plain sequence of calls.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crius::cri::api::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    ImageStatusRequest, ListContainersRequest, ListImagesRequest, ListPodSandboxRequest,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PullImageRequest,
    RemoveImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest, VersionRequest,
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
    /// The CRI runtime handler its pods ask for ("" = the default).
    pub handler: String,
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
            handler: String::new(),
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

    /// RunPodSandbox of a pod named `name` (namespace `crius-bench`), logging into
    /// `log_dir` (which must exist); returns its id.
    pub async fn run_pod(&self, name: &str, log_dir: &str) -> Result<String, BenchError> {
        let mut service = self.client.runtime.clone();
        let response = self
            .call(
                "RunPodSandbox",
                service.run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pod_config(name, log_dir)),
                    runtime_handler: self.handler.clone(),
                }),
            )
            .await?;
        Ok(response.pod_sandbox_id)
    }

    /// CreateContainer of `image` running `command` in pod `pod` (made by [`run_pod`]
    /// with the same `name` and `log_dir`); returns its id.
    pub async fn create_container(
        &self,
        pod: &str,
        name: &str,
        log_dir: &str,
        container: &str,
        image: &str,
        command: &[&str],
    ) -> Result<String, BenchError> {
        let mut service = self.client.runtime.clone();
        let response = self
            .call(
                "CreateContainer",
                service.create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.to_string(),
                    config: Some(ContainerConfig {
                        metadata: Some(ContainerMetadata {
                            name: container.to_string(),
                            attempt: 0,
                        }),
                        image: Some(spec(image)),
                        command: command.iter().map(|part| part.to_string()).collect(),
                        log_path: format!("{name}-{container}.log"),
                        ..ContainerConfig::default()
                    }),
                    sandbox_config: Some(pod_config(name, log_dir)),
                }),
            )
            .await?;
        Ok(response.container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), BenchError> {
        let mut service = self.client.runtime.clone();
        self.call(
            "StartContainer",
            service.start_container(StartContainerRequest {
                container_id: id.to_string(),
            }),
        )
        .await?;
        Ok(())
    }

    /// ExecSync of `command`; fails unless it exits 0.
    pub async fn exec_sync(&self, id: &str, command: &[&str]) -> Result<(), BenchError> {
        let mut service = self.client.runtime.clone();
        let response = self
            .call(
                "ExecSync",
                service.exec_sync(ExecSyncRequest {
                    container_id: id.to_string(),
                    cmd: command.iter().map(|part| part.to_string()).collect(),
                    timeout: 10,
                }),
            )
            .await?;
        if response.exit_code != 0 {
            return Err(BenchError::ExecFailed {
                runtime: self.name,
                exit_code: response.exit_code,
            });
        }
        Ok(())
    }

    /// StopPodSandbox then RemovePodSandbox.
    pub async fn remove_pod(&self, id: &str) -> Result<(), BenchError> {
        let mut service = self.client.runtime.clone();
        self.call(
            "StopPodSandbox",
            service.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }),
        )
        .await?;
        self.call(
            "RemovePodSandbox",
            service.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            }),
        )
        .await?;
        Ok(())
    }

    /// The ids of every pod.
    pub async fn list_pods(&self) -> Result<Vec<String>, BenchError> {
        let mut service = self.client.runtime.clone();
        let response = self
            .call(
                "ListPodSandbox",
                service.list_pod_sandbox(ListPodSandboxRequest::default()),
            )
            .await?;
        Ok(response.items.into_iter().map(|pod| pod.id).collect())
    }

    /// How many containers ListContainers returns.
    pub async fn list_containers(&self) -> Result<usize, BenchError> {
        let mut service = self.client.runtime.clone();
        let response = self
            .call(
                "ListContainers",
                service.list_containers(ListContainersRequest::default()),
            )
            .await?;
        Ok(response.containers.len())
    }

    /// The pid the verbose PodSandboxStatus reports: crius's shim, containerd's pause
    /// process.
    pub async fn pod_pid(&self, id: &str) -> Result<u32, BenchError> {
        let mut service = self.client.runtime.clone();
        let response = self
            .call(
                "PodSandboxStatus",
                service.pod_sandbox_status(PodSandboxStatusRequest {
                    pod_sandbox_id: id.to_string(),
                    verbose: true,
                }),
            )
            .await?;
        response
            .info
            .get("info")
            .and_then(|info| serde_json::from_str::<serde_json::Value>(info).ok())
            .and_then(|info| info["pid"].as_u64())
            .and_then(|pid| u32::try_from(pid).ok())
            .ok_or(BenchError::NoPodPid {
                runtime: self.name,
                pod: id.to_string(),
            })
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

/// Every pod of the benchmark: its own network namespace on the runtime's pod network.
fn pod_config(name: &str, log_dir: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "crius-bench".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: log_dir.to_string(),
        ..PodSandboxConfig::default()
    }
}

fn spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_string(),
        ..ImageSpec::default()
    }
}

//! The gRPC face of crius: the only implementations of the generated `RuntimeService` and
//! `ImageService` traits.
//!
//! Every RPC runs through [`rpc`], which opens a span named after the RPC (handlers record
//! the `id` and `name` of the object they act on), logs the outcome with its duration and
//! turns a [`CriError`] into a `tonic::Status` — the one place where errors meet gRPC codes.
//! RPCs whose capability has not landed answer `UNIMPLEMENTED` naming themselves; they
//! are listed at the end of each impl so that landing one means moving it up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::api::image_service_server::{ImageService, ImageServiceServer};
use super::api::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use super::api::*;
use super::crius_api::images_server::{Images, ImagesServer};
use super::crius_api::{
    LoadChunk, LoadResponse, PullProgress, PullRequest, SaveChunk, SaveRequest,
};
use super::{Cri, CriError};

/// kubelet's CRI client accepts messages up to 16 MiB; serve the same so that large
/// ListContainers answers get through.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

type RpcResult<T> = Result<Response<T>, Status>;
type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Both CRI services over one shared [`Cri`]; cheap to clone.
#[derive(Clone)]
pub struct CriService {
    cri: Arc<Cri>,
}

impl CriService {
    pub fn new(cri: Arc<Cri>) -> CriService {
        CriService { cri }
    }

    pub fn runtime_server(&self) -> RuntimeServiceServer<CriService> {
        RuntimeServiceServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn image_server(&self) -> ImageServiceServer<CriService> {
        ImageServiceServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// crius's own image API for its CLI.
    pub fn crius_images_server(&self) -> ImagesServer<CriService> {
        ImagesServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Runs one RPC inside its span, logs how it ended and maps the error to a gRPC status.
async fn rpc<T>(
    name: &'static str,
    work: impl Future<Output = Result<T, CriError>>,
) -> RpcResult<T> {
    let span = tracing::info_span!(
        "rpc",
        rpc = name,
        id = tracing::field::Empty,
        name = tracing::field::Empty
    );
    let started = Instant::now();
    let result = work.instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let _entered = span.enter();
    match result {
        Ok(response) => {
            tracing::debug!(?elapsed, "ok");
            Ok(Response::new(response))
        }
        Err(err) => {
            let code = err.code();
            match err {
                _ if code == tonic::Code::Internal => tracing::error!(?elapsed, ?code, "{err}"),
                _ => tracing::info!(?elapsed, ?code, "{err}"),
            }
            Err(status(err))
        }
    }
}

/// The one conversion of crius errors into gRPC statuses.
fn status(err: CriError) -> Status {
    Status::new(err.code(), err.to_string())
}

/// A stream of results from a channel, errors converted to statuses.
fn status_stream<T: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<Result<T, CriError>>,
) -> ResponseStream<T> {
    use tokio_stream::StreamExt;
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receiver).map(|item| item.map_err(status)))
}

/// Emits a service impl: the hand-written methods, then one `UNIMPLEMENTED` method per RPC
/// listed under `unimplemented` (unary) and `streaming` (server-streaming, with the name
/// of the trait's associated stream type). The trait attribute goes on the whole output so
/// that async-trait sees the generated methods too.
macro_rules! cri_service_impl {
    (
        $(#[$attr:meta])*
        impl $service:ident for $type:ty { $($method:item)* }
        unimplemented { $($unary:ident($unary_req:ty) -> $unary_resp:ty = $unary_rpc:literal;)* }
        streaming { $($streaming:ident($stream_req:ty) -> $stream_type:ident<$stream_resp:ty> = $stream_rpc:literal;)* }
    ) => {
        $(#[$attr])*
        impl $service for $type {
            $($method)*
            $(
                async fn $unary(&self, _request: Request<$unary_req>) -> RpcResult<$unary_resp> {
                    rpc($unary_rpc, async { Err(CriError::Unimplemented { rpc: $unary_rpc }) }).await
                }
            )*
            $(
                type $stream_type = ResponseStream<$stream_resp>;
                async fn $streaming(&self, _request: Request<$stream_req>) -> RpcResult<Self::$stream_type> {
                    rpc($stream_rpc, async { Err(CriError::Unimplemented { rpc: $stream_rpc }) }).await
                }
            )*
        }
    };
}

cri_service_impl! {
    #[tonic::async_trait]
    impl RuntimeService for CriService {
        async fn version(&self, _request: Request<VersionRequest>) -> RpcResult<VersionResponse> {
            rpc("Version", async { Ok(self.cri.version()) }).await
        }

        async fn status(&self, request: Request<StatusRequest>) -> RpcResult<StatusResponse> {
            rpc("Status", async { self.cri.status(request.get_ref()) }).await
        }

        async fn runtime_config(
            &self,
            _request: Request<RuntimeConfigRequest>,
        ) -> RpcResult<RuntimeConfigResponse> {
            rpc("RuntimeConfig", async { Ok(self.cri.runtime_config()) }).await
        }

        async fn update_runtime_config(
            &self,
            request: Request<UpdateRuntimeConfigRequest>,
        ) -> RpcResult<UpdateRuntimeConfigResponse> {
            rpc("UpdateRuntimeConfig", async {
                self.cri.update_runtime_config(request.get_ref())?;
                Ok(UpdateRuntimeConfigResponse {})
            })
            .await
        }

        async fn run_pod_sandbox(&self, request: Request<RunPodSandboxRequest>) -> RpcResult<RunPodSandboxResponse> {
            rpc("RunPodSandbox", self.cri.run_pod_sandbox(request.into_inner())).await
        }

        async fn stop_pod_sandbox(&self, request: Request<StopPodSandboxRequest>) -> RpcResult<StopPodSandboxResponse> {
            rpc("StopPodSandbox", self.cri.stop_pod_sandbox(request.get_ref())).await
        }

        async fn remove_pod_sandbox(
            &self,
            request: Request<RemovePodSandboxRequest>,
        ) -> RpcResult<RemovePodSandboxResponse> {
            rpc("RemovePodSandbox", self.cri.remove_pod_sandbox(request.get_ref())).await
        }

        async fn pod_sandbox_status(
            &self,
            request: Request<PodSandboxStatusRequest>,
        ) -> RpcResult<PodSandboxStatusResponse> {
            rpc("PodSandboxStatus", async { self.cri.pod_sandbox_status(request.get_ref()) }).await
        }

        async fn list_pod_sandbox(&self, request: Request<ListPodSandboxRequest>) -> RpcResult<ListPodSandboxResponse> {
            rpc("ListPodSandbox", async { Ok(self.cri.list_pod_sandbox(request.get_ref())) }).await
        }

        async fn create_container(&self, request: Request<CreateContainerRequest>) -> RpcResult<CreateContainerResponse> {
            rpc("CreateContainer", self.cri.create_container(request.into_inner())).await
        }

        async fn start_container(&self, request: Request<StartContainerRequest>) -> RpcResult<StartContainerResponse> {
            rpc("StartContainer", self.cri.start_container(request.get_ref())).await
        }

        async fn stop_container(&self, request: Request<StopContainerRequest>) -> RpcResult<StopContainerResponse> {
            rpc("StopContainer", self.cri.stop_container(request.get_ref())).await
        }

        async fn remove_container(&self, request: Request<RemoveContainerRequest>) -> RpcResult<RemoveContainerResponse> {
            rpc("RemoveContainer", self.cri.remove_container(request.get_ref())).await
        }

        async fn container_status(&self, request: Request<ContainerStatusRequest>) -> RpcResult<ContainerStatusResponse> {
            rpc("ContainerStatus", async { self.cri.container_status(request.get_ref()) }).await
        }

        async fn reopen_container_log(
            &self,
            request: Request<ReopenContainerLogRequest>,
        ) -> RpcResult<ReopenContainerLogResponse> {
            rpc("ReopenContainerLog", self.cri.reopen_container_log(request.get_ref())).await
        }

        async fn exec_sync(&self, request: Request<ExecSyncRequest>) -> RpcResult<ExecSyncResponse> {
            rpc("ExecSync", self.cri.exec_sync(request.get_ref())).await
        }

        async fn exec(&self, request: Request<ExecRequest>) -> RpcResult<ExecResponse> {
            rpc("Exec", async { self.cri.exec(request.get_ref()) }).await
        }

        async fn attach(&self, request: Request<AttachRequest>) -> RpcResult<AttachResponse> {
            rpc("Attach", async { self.cri.attach(request.get_ref()) }).await
        }

        async fn port_forward(&self, request: Request<PortForwardRequest>) -> RpcResult<PortForwardResponse> {
            rpc("PortForward", async { self.cri.port_forward(request.get_ref()) }).await
        }

        async fn container_stats(&self, request: Request<ContainerStatsRequest>) -> RpcResult<ContainerStatsResponse> {
            rpc("ContainerStats", async { self.cri.container_stats(request.get_ref()) }).await
        }

        async fn list_container_stats(
            &self,
            request: Request<ListContainerStatsRequest>,
        ) -> RpcResult<ListContainerStatsResponse> {
            rpc("ListContainerStats", async { Ok(self.cri.list_container_stats(request.get_ref())) }).await
        }

        async fn list_containers(&self, request: Request<ListContainersRequest>) -> RpcResult<ListContainersResponse> {
            rpc("ListContainers", async { Ok(self.cri.list_containers(request.get_ref())) }).await
        }
    }
    unimplemented {
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse = "UpdateContainerResources";
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse = "PodSandboxStats";
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse = "ListPodSandboxStats";
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse = "CheckpointContainer";
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse = "ListMetricDescriptors";
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse = "ListPodSandboxMetrics";
        update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse = "UpdatePodSandboxResources";
    }
    streaming {
        stream_pod_sandboxes(StreamPodSandboxesRequest) -> StreamPodSandboxesStream<StreamPodSandboxesResponse> = "StreamPodSandboxes";
        stream_containers(StreamContainersRequest) -> StreamContainersStream<StreamContainersResponse> = "StreamContainers";
        stream_container_stats(StreamContainerStatsRequest) -> StreamContainerStatsStream<StreamContainerStatsResponse> = "StreamContainerStats";
        stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> StreamPodSandboxStatsStream<StreamPodSandboxStatsResponse> = "StreamPodSandboxStats";
        get_container_events(GetEventsRequest) -> GetContainerEventsStream<ContainerEventResponse> = "GetContainerEvents";
        stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) -> StreamPodSandboxMetricsStream<StreamPodSandboxMetricsResponse> = "StreamPodSandboxMetrics";
    }
}

cri_service_impl! {
    #[tonic::async_trait]
    impl ImageService for CriService {
        async fn list_images(&self, request: Request<ListImagesRequest>) -> RpcResult<ListImagesResponse> {
            rpc("ListImages", async { Ok(self.cri.list_images(request.get_ref())) }).await
        }

        async fn image_status(&self, request: Request<ImageStatusRequest>) -> RpcResult<ImageStatusResponse> {
            rpc("ImageStatus", self.cri.image_status(request.get_ref())).await
        }

        async fn pull_image(&self, request: Request<PullImageRequest>) -> RpcResult<PullImageResponse> {
            rpc("PullImage", self.cri.pull_image(request.into_inner())).await
        }

        async fn remove_image(&self, request: Request<RemoveImageRequest>) -> RpcResult<RemoveImageResponse> {
            rpc("RemoveImage", self.cri.remove_image(request.get_ref())).await
        }

        async fn image_fs_info(&self, _request: Request<ImageFsInfoRequest>) -> RpcResult<ImageFsInfoResponse> {
            rpc("ImageFsInfo", async { Ok(self.cri.image_fs_info()) }).await
        }
    }
    unimplemented {}
    streaming {
        stream_images(StreamImagesRequest) -> StreamImagesStream<StreamImagesResponse> = "StreamImages";
    }
}

#[tonic::async_trait]
impl Images for CriService {
    type PullStream = ResponseStream<PullProgress>;
    type SaveStream = ResponseStream<SaveChunk>;

    async fn pull(&self, request: Request<PullRequest>) -> RpcResult<Self::PullStream> {
        rpc("crius.Pull", async {
            Ok(status_stream(
                self.cri.pull_with_progress(request.into_inner())?,
            ))
        })
        .await
    }

    async fn load(&self, request: Request<tonic::Streaming<LoadChunk>>) -> RpcResult<LoadResponse> {
        rpc("crius.Load", self.cri.load_images(request.into_inner())).await
    }

    async fn save(&self, request: Request<SaveRequest>) -> RpcResult<Self::SaveStream> {
        rpc("crius.Save", async {
            Ok(status_stream(
                self.cri.save_images(request.into_inner().images)?,
            ))
        })
        .await
    }
}

//! ContainerStatus and ListContainers.

use std::collections::HashMap;

use super::api::{
    Container, ContainerMetadata, ContainerState as CriContainerState, ContainerStatus,
    ContainerStatusRequest, ContainerStatusResponse, ImageSpec, ListContainersRequest,
    ListContainersResponse, Mount, MountPropagation as CriPropagation,
};
use super::{Cri, CriError};
use crate::runtime::MountPropagation;
use crate::store::{ContainerRecord, ContainerState};

impl Cri {
    pub(super) fn container_status(
        &self,
        request: &ContainerStatusRequest,
    ) -> Result<ContainerStatusResponse, CriError> {
        tracing::Span::current().record("id", request.container_id.as_str());
        let container = self.container(&request.container_id)?;
        let mut info = HashMap::new();
        if request.verbose {
            let spec = std::fs::read(self.bundle_dir(&container.id).join("config.json"))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
            let details = serde_json::json!({
                "pid": container.pid,
                "sandboxID": container.sandbox_id,
                "runtimeSpec": spec,
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(ContainerStatusResponse {
            status: Some(ContainerStatus {
                id: container.id.clone(),
                metadata: Some(metadata(&container)),
                state: state(&container) as i32,
                created_at: container.created_at,
                started_at: container.started_at,
                finished_at: container.finished_at,
                exit_code: container.exit_code,
                image: Some(ImageSpec {
                    image: container.image.clone(),
                    ..ImageSpec::default()
                }),
                image_ref: container.image_id.clone(),
                reason: container.reason.clone(),
                message: container.message.clone(),
                labels: container.labels.clone().into_iter().collect(),
                annotations: container.annotations.clone().into_iter().collect(),
                mounts: container
                    .mounts
                    .iter()
                    .map(|mount| Mount {
                        container_path: mount.container_path.clone(),
                        host_path: mount.host_path.clone(),
                        readonly: mount.readonly,
                        image: (!mount.image_id.is_empty()).then(|| ImageSpec {
                            image: mount.image.clone(),
                            image_ref: mount.image_id.clone(),
                            ..ImageSpec::default()
                        }),
                        propagation: match mount.propagation {
                            MountPropagation::Private => CriPropagation::PropagationPrivate,
                            MountPropagation::HostToContainer => {
                                CriPropagation::PropagationHostToContainer
                            }
                            MountPropagation::Bidirectional => {
                                CriPropagation::PropagationBidirectional
                            }
                        } as i32,
                        ..Mount::default()
                    })
                    .collect(),
                log_path: container.log_path.clone(),
                image_id: container.image_id.clone(),
                ..ContainerStatus::default()
            }),
            info,
        })
    }

    pub(super) fn list_containers(
        &self,
        request: &ListContainersRequest,
    ) -> ListContainersResponse {
        let filter = request.filter.clone().unwrap_or_default();
        let containers = self
            .containers
            .list()
            .into_iter()
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&filter.pod_sandbox_id)
            })
            .filter(|c| {
                filter
                    .state
                    .is_none_or(|wanted| wanted.state == state(c) as i32)
            })
            .filter(|c| {
                filter
                    .label_selector
                    .iter()
                    .all(|(key, value)| c.labels.get(key) == Some(value))
            })
            .map(|c| Container {
                id: c.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: Some(metadata(&c)),
                image: Some(ImageSpec {
                    image: c.image.clone(),
                    ..ImageSpec::default()
                }),
                image_ref: c.image_id.clone(),
                state: state(&c) as i32,
                created_at: c.created_at,
                labels: c.labels.clone().into_iter().collect(),
                annotations: c.annotations.clone().into_iter().collect(),
                image_id: c.image_id.clone(),
            })
            .collect();
        ListContainersResponse { containers }
    }
}

fn metadata(container: &ContainerRecord) -> ContainerMetadata {
    ContainerMetadata {
        name: container.name.clone(),
        attempt: container.attempt,
    }
}

fn state(container: &ContainerRecord) -> CriContainerState {
    match container.state {
        ContainerState::Created => CriContainerState::ContainerCreated,
        ContainerState::Running => CriContainerState::ContainerRunning,
        ContainerState::Exited => CriContainerState::ContainerExited,
    }
}

//! StartContainer: runs a created container and starts watching for its exit.

use super::api::{StartContainerRequest, StartContainerResponse};
use super::pod_shims::{blocking, watch_exit};
use super::{now_ns, Cri, CriError};
use crate::store::{ContainerRecord, ContainerState};

impl Cri {
    pub(super) async fn start_container(
        &self,
        request: &StartContainerRequest,
    ) -> Result<StartContainerResponse, CriError> {
        let container = self.container(&request.container_id)?;
        tracing::Span::current().record("id", container.id.as_str());
        if !container.can_start() {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is {:?}: only a created container can be started",
                container.id, container.state
            )));
        }
        let shim = self.shims.get(&container.sandbox_id)?;
        let (starting, id) = (shim.clone(), container.id.clone());
        // Taken before the start: a quick process may exit, with its exit's time, before
        // the start call returns, and must not look as if it finished before it started.
        let started_at = now_ns();
        let pid = blocking(move || starting.start(&id)).await?;
        self.containers.update(&container.id, |record| {
            // A quick process's TaskExit event may have been recorded already.
            if record.state != ContainerState::Exited {
                record.state = ContainerState::Running;
            }
            record.pid = pid;
            record.started_at = started_at;
        })?;
        let shim_pid = self.sandbox(&container.sandbox_id)?.shim_pid;
        watch_exit(
            self.containers.clone(),
            self.sandboxes.clone(),
            shim,
            shim_pid,
            container.id.clone(),
        );
        tracing::info!("container started");
        Ok(StartContainerResponse {})
    }

    /// The container `id` (or unique id prefix) names, or NOT_FOUND.
    pub(super) fn container(&self, id: &str) -> Result<ContainerRecord, CriError> {
        self.containers.find(id)?.ok_or_else(|| CriError::NotFound {
            kind: "container",
            id: id.to_string(),
        })
    }
}

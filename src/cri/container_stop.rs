//! StopContainer and RemoveContainer, both idempotent. Stop sends the container's stop
//! signal, then SIGKILL when the timeout passes; Remove kills a running container first,
//! deletes it from its shim and removes its rootfs, writable layer and record.

use std::time::Duration;

use nix::sys::signal::Signal;

use super::api::{
    RemoveContainerRequest, RemoveContainerResponse, StopContainerRequest, StopContainerResponse,
};
use super::image_volume::unmount_image_volumes;
use super::pod_shims::{blocking, record_exit, shim_running};
use super::{Cri, CriError};
use crate::shim::ShimError;
use crate::snapshot::rootfs::unmount;
use crate::store::ContainerRecord;

/// How long to wait for a SIGKILLed container to be reaped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

impl Cri {
    pub(super) async fn stop_container(
        &self,
        request: &StopContainerRequest,
    ) -> Result<StopContainerResponse, CriError> {
        tracing::Span::current().record("id", request.container_id.as_str());
        // Stopping a container that is gone is success, as kubelet retries Stop.
        if let Some(container) = self.containers.find(&request.container_id)? {
            if container.is_running() {
                let timeout = Duration::from_secs(request.timeout.max(0) as u64);
                self.stop_running(&container, timeout).await?;
            }
        }
        Ok(StopContainerResponse {})
    }

    pub(super) async fn remove_container(
        &self,
        request: &RemoveContainerRequest,
    ) -> Result<RemoveContainerResponse, CriError> {
        tracing::Span::current().record("id", request.container_id.as_str());
        if let Some(container) = self.containers.find(&request.container_id)? {
            self.remove_container_record(&container).await?;
        }
        Ok(RemoveContainerResponse {})
    }

    /// Stop signal, up to `timeout` for the container to exit, then SIGKILL.
    pub(super) async fn stop_running(
        &self,
        container: &ContainerRecord,
        timeout: Duration,
    ) -> Result<(), CriError> {
        let shim = self.shims.get(&container.sandbox_id)?;
        let id = container.id.clone();
        if !timeout.is_zero() {
            let (signalling, signalled) = (shim.clone(), id.clone());
            let signal = container.stop_signal as u32;
            blocking(move || signalling.kill(&signalled, signal, false)).await?;
            let (waiting, waited) = (shim.clone(), id.clone());
            if let Some(exit) = blocking(move || waiting.wait(&waited, timeout)).await? {
                record_exit(&self.containers, &id, exit);
                return Ok(());
            }
        }
        let (killing, killed) = (shim.clone(), id.clone());
        blocking(move || killing.kill(&killed, Signal::SIGKILL as u32, true)).await?;
        let (waiting, waited) = (shim, id.clone());
        match blocking(move || waiting.wait(&waited, KILL_TIMEOUT)).await? {
            Some(exit) => {
                record_exit(&self.containers, &id, exit);
                Ok(())
            }
            None => Err(CriError::Internal {
                what: "stopping a container",
                reason: format!("container {id} did not exit within {KILL_TIMEOUT:?} of SIGKILL"),
            }),
        }
    }

    /// Removes a container whatever its state; what is already gone is skipped.
    pub(super) async fn remove_container_record(
        &self,
        container: &ContainerRecord,
    ) -> Result<(), CriError> {
        if container.is_running() {
            self.stop_running(container, Duration::ZERO).await?;
        }
        let sandbox = self.sandboxes.find(&container.sandbox_id)?;
        let shim_alive = sandbox
            .as_ref()
            .is_some_and(|sandbox| shim_running(sandbox.shim_pid));
        if !shim_alive {
            // A container outlives its sandbox record only if that removal was cut
            // short; its pod then ran with the default handler or its state is gone.
            let handler = sandbox.map_or_else(String::new, |sandbox| sandbox.runtime_handler);
            let runtime = self.runtime_of(&handler)?;
            self.shims
                .delete_orphan(&container.sandbox_id, &container.id, runtime)
                .await?;
        } else if let Ok(shim) = self.shims.get(&container.sandbox_id) {
            let id = container.id.clone();
            match blocking(move || shim.delete(&id)).await {
                Ok(_) | Err(CriError::Shim(ShimError::NotFound(_))) => {}
                Err(err) => return Err(err),
            }
        }
        let bundle = self.bundle_dir(&container.id);
        unmount_image_volumes(&bundle)?;
        unmount(&bundle.join("rootfs"))?;
        for dir in [bundle, self.layer_dir(&container.id)] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(super::sandbox_run::io_error("remove", &dir, err)),
            }
        }
        self.containers.remove(&container.id)?;
        self.shims.forget_task(&container.id);
        tracing::info!(container = %container.id, "container removed");
        Ok(())
    }
}

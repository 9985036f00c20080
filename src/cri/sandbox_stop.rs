//! StopPodSandbox and RemovePodSandbox: both idempotent, as kubelet calls them more than
//! once. Stop kills the pod's containers, releases its network (host ports, veth,
//! address) and marks it NOTREADY; Remove also removes the containers, stops the shim
//! (releasing the pod's namespaces) and deletes every file and mount of the pod.

use std::time::Duration;

use super::api::{
    RemovePodSandboxRequest, RemovePodSandboxResponse, StopPodSandboxRequest,
    StopPodSandboxResponse,
};
use super::pod_shims::{blocking, shim_running};
use super::{Cri, CriError};
use crate::snapshot::rootfs::unmount;
use crate::store::{SandboxRecord, SandboxState};

/// How long a shim may take to exit after Shutdown.
const SHIM_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

impl Cri {
    pub(super) async fn stop_pod_sandbox(
        &self,
        request: &StopPodSandboxRequest,
    ) -> Result<StopPodSandboxResponse, CriError> {
        tracing::Span::current().record("id", request.pod_sandbox_id.as_str());
        // Stopping what is already gone is success: kubelet retries Stop.
        if let Some(sandbox) = self.sandboxes.find(&request.pod_sandbox_id)? {
            self.stop_sandbox(&sandbox).await?;
        }
        Ok(StopPodSandboxResponse {})
    }

    pub(super) async fn remove_pod_sandbox(
        &self,
        request: &RemovePodSandboxRequest,
    ) -> Result<RemovePodSandboxResponse, CriError> {
        tracing::Span::current().record("id", request.pod_sandbox_id.as_str());
        let Some(sandbox) = self.sandboxes.find(&request.pod_sandbox_id)? else {
            return Ok(RemovePodSandboxResponse {});
        };
        self.stop_sandbox(&sandbox).await?;
        for container in self.containers_of(&sandbox.id) {
            self.remove_container_record(&container).await?;
        }
        if let Ok(shim) = self.shims.get(&sandbox.id) {
            if let Err(err) = shim.shutdown(true) {
                tracing::warn!(sandbox = %sandbox.id, "shim shutdown: {err}");
            }
        }
        self.shims.forget(&sandbox.id);
        wait_for_exit(sandbox.shim_pid).await;
        self.shims.remove_files(&sandbox.id)?;
        if !sandbox.host_network {
            let (network, id) = (self.network.clone(), sandbox.id.clone());
            blocking(move || network.remove_netns(&id)).await?;
        }
        let dir = self.sandbox_dir(&sandbox.id);
        unmount(&dir.join("shm"))?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(super::sandbox_run::io_error("remove", &dir, err)),
        }
        self.sandboxes.remove(&sandbox.id)?;
        tracing::info!("pod sandbox removed");
        Ok(RemovePodSandboxResponse {})
    }

    /// Kills every container of the sandbox and marks it NOTREADY.
    async fn stop_sandbox(&self, sandbox: &SandboxRecord) -> Result<(), CriError> {
        for container in self.containers_of(&sandbox.id) {
            if container.is_running() {
                self.stop_running(&container, Duration::ZERO).await?;
            }
        }
        if !sandbox.host_network {
            let (network, id) = (self.network.clone(), sandbox.id.clone());
            blocking(move || network.tear_down(&id)).await?;
        }
        if sandbox.state != SandboxState::NotReady {
            self.sandboxes
                .update(&sandbox.id, |record| record.state = SandboxState::NotReady)?;
            tracing::info!(sandbox = %sandbox.id, "pod sandbox stopped");
        }
        Ok(())
    }
}

/// Waits (bounded) until process `pid` is gone, so that a removed pod leaves no process.
async fn wait_for_exit(pid: u32) {
    if pid == 0 {
        return;
    }
    let deadline = tokio::time::Instant::now() + SHIM_EXIT_TIMEOUT;
    while shim_running(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

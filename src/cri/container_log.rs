//! ReopenContainerLog: after kubelet renamed a container's log file to rotate it, the
//! shim that writes the log reopens it at its path, so new output goes to a new file.

use super::api::{ReopenContainerLogRequest, ReopenContainerLogResponse};
use super::pod_shims::blocking;
use super::{Cri, CriError};

impl Cri {
    pub(super) async fn reopen_container_log(
        &self,
        request: &ReopenContainerLogRequest,
    ) -> Result<ReopenContainerLogResponse, CriError> {
        let container = self.container(&request.container_id)?;
        tracing::Span::current().record("id", container.id.as_str());
        // The CRI: a container that is not running gets an error, and no new file.
        if !container.is_running() {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running: its log is not reopened",
                container.id
            )));
        }
        let shim = self.shims.get(&container.sandbox_id)?;
        let id = container.id.clone();
        blocking(move || shim.reopen_log(&id)).await?;
        Ok(ReopenContainerLogResponse {})
    }
}

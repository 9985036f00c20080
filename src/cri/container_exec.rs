//! ExecSync: runs a command in a running container (its namespaces, cgroup, user and
//! environment, from the container's own spec) and answers with its output and exit
//! code. The timeout kills the exec'd process tree, never the container.

use std::time::Duration;

use super::api::{ExecSyncRequest, ExecSyncResponse};
use super::pod_shims::blocking;
use super::sandbox_run::io_error;
use super::{new_id, Cri, CriError};

/// kubelet's limit on each of stdout and stderr.
const OUTPUT_CAP: usize = 16 * 1024 * 1024;

impl Cri {
    pub(super) async fn exec_sync(
        &self,
        request: &ExecSyncRequest,
    ) -> Result<ExecSyncResponse, CriError> {
        let container = self.container(&request.container_id)?;
        tracing::Span::current().record("id", container.id.as_str());
        if request.cmd.is_empty() {
            return Err(CriError::invalid("cmd", "is empty"));
        }
        if !container.is_running() {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running: cannot exec in it",
                container.id
            )));
        }
        let process = exec_process(&self.bundle_dir(&container.id), &request.cmd, false)?;
        let timeout = (request.timeout > 0).then(|| Duration::from_secs(request.timeout as u64));
        let shim = self.shims.get(&container.sandbox_id)?;
        let (container_id, exec_id) = (container.id.clone(), new_id()?[..32].to_string());
        let output = blocking(move || {
            shim.exec_sync(&container_id, &exec_id, &process, timeout, OUTPUT_CAP)
        })
        .await?;
        if output.timed_out {
            return Err(CriError::DeadlineExceeded(format!(
                "command {:?} timed out after {}s and was killed",
                request.cmd, request.timeout
            )));
        }
        Ok(ExecSyncResponse {
            stdout: output.stdout,
            stderr: output.stderr,
            exit_code: output.exit_code,
        })
    }
}

/// The container's own process settings (user, environment, capabilities, working
/// directory) with `cmd` as its arguments and a terminal or not, as runc exec reads them.
pub(super) fn exec_process(
    bundle: &std::path::Path,
    cmd: &[String],
    terminal: bool,
) -> Result<Vec<u8>, CriError> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|err| io_error("read", &path, err))?;
    let spec: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|err| CriError::Internal {
            what: "reading the container's spec",
            reason: err.to_string(),
        })?;
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(cmd);
    process["terminal"] = serde_json::Value::Bool(terminal);
    serde_json::to_vec(&process).map_err(|err| CriError::Internal {
        what: "writing the exec process",
        reason: err.to_string(),
    })
}

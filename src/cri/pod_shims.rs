//! The shims of the node's pods, from the CRI layer's side: starting them, the live
//! connections, blocking shim calls run off the async workers, and what records each
//! container's exit: the shims' TaskExit events as they arrive, and a watcher per
//! container (a Wait on its shim), which also sees a shim die and covers events that
//! were lost (a shim drops an event it cannot forward for a few seconds, e.g. while
//! criusd restarts). Whichever comes first is recorded; after a criusd restart, the
//! exits that happened meanwhile come from the shims' state (see `recovery`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use super::CriError;
use crate::cgroups::Cgroup;
use crate::shim::daemon::PodNamespaces;
use crate::shim::events::{ReceivedEvent, TaskEvent};
use crate::shim::manager::{ExitStatus, Shim, ShimManager};
use crate::shim::runc::OciRuntime;
use crate::shim::ShimError;
use crate::store::{ContainerRecord, ContainerState, RecordStore, SandboxRecord, SandboxState};

/// How long one Wait call may block before the watcher asks again; keeps shim threads
/// from being held forever by a connection that died.
const WAIT_SLICE: Duration = Duration::from_secs(300);

/// How long a shim whose connection broke may take to show as exited.
const SHIM_DEATH_GRACE: Duration = Duration::from_secs(2);

pub(super) struct PodShims {
    manager: Arc<ShimManager>,
    /// Connections by sandbox id.
    live: Mutex<HashMap<String, Arc<Shim>>>,
}

impl PodShims {
    pub(super) fn new(manager: ShimManager) -> PodShims {
        PodShims {
            manager: Arc::new(manager),
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Starts the shim of a new pod, running its containers with `runtime`.
    pub(super) async fn start(
        &self,
        sandbox_id: &str,
        runtime: OciRuntime,
        namespaces: PodNamespaces,
        hostname: Option<String>,
    ) -> Result<Arc<Shim>, CriError> {
        let manager = self.manager.clone();
        let id = sandbox_id.to_string();
        let shim =
            blocking(move || manager.start(&id, &runtime, namespaces, hostname.as_deref())).await?;
        let shim = Arc::new(shim);
        self.lock().insert(sandbox_id.to_string(), shim.clone());
        Ok(shim)
    }

    /// The connection to a pod's shim, reconnecting when there is none yet (after a
    /// criusd restart).
    pub(super) fn get(&self, sandbox_id: &str) -> Result<Arc<Shim>, CriError> {
        if let Some(shim) = self.lock().get(sandbox_id) {
            return Ok(shim.clone());
        }
        let shim = Arc::new(self.manager.connect(sandbox_id)?);
        self.lock().insert(sandbox_id.to_string(), shim.clone());
        Ok(shim)
    }

    /// Deletes a container of a pod whose shim died, with the pod's OCI `runtime` (see
    /// [`ShimManager::delete_orphan`]).
    pub(super) async fn delete_orphan(
        &self,
        sandbox_id: &str,
        id: &str,
        runtime: OciRuntime,
    ) -> Result<(), CriError> {
        let (manager, sandbox, id) = (self.manager.clone(), sandbox_id.to_string(), id.to_string());
        blocking(move || manager.delete_orphan(&sandbox, &id, &runtime)).await
    }

    /// Where the shim of `sandbox_id` hands out container output to attach clients.
    pub(super) fn attach_socket(&self, sandbox_id: &str) -> std::path::PathBuf {
        self.manager.attach_socket(sandbox_id)
    }

    /// Deletes the files of the exited shim of a removed pod.
    pub(super) fn remove_files(&self, sandbox_id: &str) -> Result<(), CriError> {
        Ok(self.manager.remove_files(sandbox_id)?)
    }

    pub(super) fn forget(&self, sandbox_id: &str) {
        self.lock().remove(sandbox_id);
    }

    /// Forgets the task events of a removed container.
    pub(super) fn forget_task(&self, container_id: &str) {
        self.manager.events().forget(container_id);
    }

    /// Stops receiving task events (criusd's shutdown).
    pub(super) fn stop_events(&self) {
        self.manager.stop_events();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Shim>>> {
        self.live
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Runs a blocking call (a shim request, netlink, a namespace change) on a blocking
/// thread, off the async workers.
pub(super) async fn blocking<T: Send + 'static, E: Into<CriError> + Send + 'static>(
    call: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, CriError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|_| CriError::Internal {
            what: "running a blocking call",
            reason: "the blocking task panicked".to_string(),
        })?
        .map_err(Into::into)
}

/// Records the container's exit when it happens, however it happens: also when its
/// pod's shim (process `shim_pid`) dies and takes the container with it, which also
/// makes the pod NOTREADY.
pub(super) fn watch_exit(
    containers: Arc<RecordStore<ContainerRecord>>,
    sandboxes: Arc<RecordStore<SandboxRecord>>,
    shim: Arc<Shim>,
    shim_pid: u32,
    id: String,
) {
    tokio::spawn(async move {
        loop {
            let (waiting, container) = (shim.clone(), id.clone());
            match blocking(move || waiting.wait(&container, WAIT_SLICE)).await {
                Ok(Some(exit)) => {
                    record_exit(&containers, &id, exit);
                    return;
                }
                Ok(None) => continue,
                Err(err) if !shim_running_after_error(&err, shim_pid).await => {
                    tracing::warn!(container = %id, "the pod's shim died: {err}");
                    record_shim_lost(&containers, &id);
                    if let Ok(Some(container)) = containers.find(&id) {
                        let _ = sandboxes.update(&container.sandbox_id, |record| {
                            record.state = SandboxState::NotReady
                        });
                    }
                    return;
                }
                Err(err) => {
                    // The container is gone (removed): nothing to wait for.
                    tracing::debug!(container = %id, "stopped watching for the exit: {err}");
                    return;
                }
            }
        }
    });
}

/// Records container exits from the shims' TaskExit events, on a thread of its own, until
/// the events stop (the event server is gone). Exits of exec'd processes are left to
/// ExecSync, and events of containers criusd does not know (removed) are ignored.
pub(super) fn record_task_exits(
    events: std::sync::mpsc::Receiver<ReceivedEvent>,
    containers: Arc<RecordStore<ContainerRecord>>,
) {
    let spawned = std::thread::Builder::new()
        .name("task-exits".into())
        .spawn(move || {
            for received in events {
                let TaskEvent::Exit {
                    container_id,
                    id,
                    exit_status,
                    exited_at,
                    ..
                } = received.event
                else {
                    continue;
                };
                let known = containers
                    .find(&container_id)
                    .is_ok_and(|found| found.is_some_and(|record| record.id == container_id));
                if id != container_id || !known {
                    continue;
                }
                let exit = ExitStatus {
                    code: exit_status as i32,
                    at: exited_at,
                };
                record_exit(&containers, &container_id, exit);
            }
        });
    if let Err(err) = spawned {
        tracing::warn!("cannot record exits from task events: {err}");
    }
}

/// Whether the shim process `pid` still runs after a call to it failed with `err`. A
/// shim that answered NotFound runs. Other errors come from the connection, which a
/// dying shim closes a moment before the kernel shows it as exited (its files are closed
/// before it becomes a zombie): the shim is given a moment to finish dying.
async fn shim_running_after_error(err: &CriError, pid: u32) -> bool {
    if matches!(err, CriError::Shim(ShimError::NotFound(_))) {
        return true;
    }
    let deadline = tokio::time::Instant::now() + SHIM_DEATH_GRACE;
    while shim_running(pid) {
        if tokio::time::Instant::now() >= deadline {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Marks a container exited because its shim, which ran it, is gone: its real exit
/// status died with the shim.
pub(super) fn record_shim_lost(containers: &RecordStore<ContainerRecord>, id: &str) {
    let updated = containers.update(id, |record| {
        if record.state == ContainerState::Exited {
            return;
        }
        record.state = ContainerState::Exited;
        record.finished_at = super::now_ns();
        record.exit_code = 255;
        record.reason = "ShimLost".to_string();
        record.message = "the pod's shim process is gone".to_string();
    });
    if let Err(err) = updated {
        tracing::error!(container = %id, "cannot record the container's exit: {err}");
    }
}

/// Whether the shim process `pid` still runs. A zombie does not: it holds no namespace,
/// mount or file any more, and reaping it is its new parent's business (init, which on
/// some hosts reaps only every few seconds).
pub(super) fn shim_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state …`: comm may hold spaces and parentheses, so look after the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z") | Some("X"))
}

/// Marks a container exited with `exit`, once: later calls keep the first record.
pub(super) fn record_exit(containers: &RecordStore<ContainerRecord>, id: &str, exit: ExitStatus) {
    let finished_at = exit
        .at
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_nanos() as i64)
        .unwrap_or_default();
    let updated = containers.update(id, |record| {
        if record.state == ContainerState::Exited {
            return;
        }
        record.state = ContainerState::Exited;
        record.finished_at = finished_at;
        record.exit_code = exit.code;
        // The cgroup still exists (runc deletes it with the container): ask it whether
        // the kernel's OOM killer ended the container.
        record.reason = if Cgroup::new(&record.cgroup).oom_killed() {
            "OOMKilled"
        } else if exit.code == 0 {
            "Completed"
        } else {
            "Error"
        }
        .to_string();
    });
    if let Err(err) = updated {
        tracing::error!(container = %id, "cannot record the container's exit: {err}");
    }
}

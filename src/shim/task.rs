//! The shim's containerd shim v2 Task service: what criusd's shim manager (or containerd)
//! calls over ttrpc to run the containers of one pod.
//!
//! Container states (runc's): `create` → CREATED → `start` → RUNNING → (exit) → STOPPED →
//! `delete` → gone. Exits come from the reaper through a monitor thread that records them
//! against the containers' init pids and wakes every `wait`.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use containerd_shim_protos::api::{
    CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, KillRequest,
    ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse, Status, WaitRequest,
    WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::ttrpc::{self, TtrpcContext};
use containerd_shim_protos::Task;

use super::cri_log::{copy_stream, CriLog, Stream};
use super::reaper::{Exit, Reaper};
use super::runc::{dev_null, InitStdio, Runc};
use super::ShimError;

/// One container of the pod, as the shim tracks it.
struct Container {
    bundle: PathBuf,
    pid: i32,
    started: bool,
    exit: Option<Exit>,
    log: Arc<CriLog>,
    /// The threads copying the container's stdout and stderr into its log; joined at
    /// delete so that no output is lost.
    copiers: Vec<std::thread::JoinHandle<()>>,
}

/// The Task service of one shim.
pub struct TaskService {
    runc: Runc,
    reaper: Arc<Reaper>,
    containers: Mutex<HashMap<String, Container>>,
    /// Signalled whenever a container exits.
    exited: Condvar,
    /// Tells the shim's main thread to exit (sent by `shutdown`).
    shutdown: Mutex<Sender<()>>,
}

impl TaskService {
    pub fn new(runc: Runc, reaper: Arc<Reaper>, shutdown: Sender<()>) -> Arc<TaskService> {
        let service = Arc::new(TaskService {
            runc,
            reaper: reaper.clone(),
            containers: Mutex::new(HashMap::new()),
            exited: Condvar::new(),
            shutdown: Mutex::new(shutdown),
        });
        let monitor = Arc::downgrade(&service);
        let exits = reaper.subscribe();
        std::thread::Builder::new()
            .name("exit-monitor".into())
            .spawn(move || {
                for exit in exits {
                    let Some(service) = monitor.upgrade() else {
                        return;
                    };
                    service.record_exit(exit);
                }
            })
            .ok();
        service
    }

    fn record_exit(&self, exit: Exit) {
        let mut containers = self.lock();
        if let Some(container) = containers
            .values_mut()
            .find(|c| c.pid == exit.pid && c.exit.is_none())
        {
            container.exit = Some(exit);
            self.exited.notify_all();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Container>> {
        self.containers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn create_container(&self, request: &CreateTaskRequest) -> Result<i32, ShimError> {
        if request.id.is_empty() || request.bundle.is_empty() {
            return Err(ShimError::InvalidArgument(
                "id and bundle are required".into(),
            ));
        }
        if request.terminal {
            return Err(ShimError::InvalidArgument(
                "terminals are not supported yet".into(),
            ));
        }
        if self.lock().contains_key(&request.id) {
            return Err(ShimError::AlreadyExists(request.id.clone()));
        }
        let bundle = PathBuf::from(&request.bundle);
        let log_path = if request.stdout.is_empty() {
            bundle.join("output.log")
        } else {
            PathBuf::from(&request.stdout)
        };
        let log = CriLog::open(&log_path).map_err(|source| ShimError::Io {
            what: "open the container log",
            source,
        })?;
        let (stdout_reader, stdout_writer) = pipe()?;
        let (stderr_reader, stderr_writer) = pipe()?;
        let copiers = vec![
            copy_stream(stdout_reader, Stream::Stdout, log.clone()).map_err(|source| {
                ShimError::Io {
                    what: "start the stdout copier",
                    source,
                }
            })?,
            copy_stream(stderr_reader, Stream::Stderr, log.clone()).map_err(|source| {
                ShimError::Io {
                    what: "start the stderr copier",
                    source,
                }
            })?,
        ];
        let stdio = InitStdio {
            stdin: Stdio::from(dev_null()?),
            stdout: Stdio::from(stdout_writer),
            stderr: Stdio::from(stderr_writer),
        };
        // On failure the pipes' write ends close with the command, so the copiers end.
        let pid = self
            .runc
            .create(&self.reaper, &request.id, &bundle, stdio)?;
        self.lock().insert(
            request.id.clone(),
            Container {
                bundle,
                pid,
                started: false,
                exit: None,
                log,
                copiers,
            },
        );
        Ok(pid)
    }

    fn start_container(&self, id: &str) -> Result<i32, ShimError> {
        let (bundle, pid) = {
            let containers = self.lock();
            let container = containers
                .get(id)
                .ok_or_else(|| ShimError::NotFound(id.to_string()))?;
            if container.started {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {id} was already started"
                )));
            }
            (container.bundle.clone(), container.pid)
        };
        self.runc.start(&self.reaper, id, &bundle)?;
        if let Some(container) = self.lock().get_mut(id) {
            container.started = true;
        }
        Ok(pid)
    }

    fn kill_container(&self, request: &KillRequest) -> Result<(), ShimError> {
        let bundle = {
            let containers = self.lock();
            let container = containers
                .get(&request.id)
                .ok_or_else(|| ShimError::NotFound(request.id.clone()))?;
            // Signalling a container that has exited is a no-op, so stop is idempotent.
            if container.exit.is_some() {
                return Ok(());
            }
            container.bundle.clone()
        };
        match self.runc.kill(
            &self.reaper,
            &request.id,
            &bundle,
            request.signal,
            request.all,
        ) {
            Err(ShimError::Runtime { message, .. }) if message.contains("not running") => Ok(()),
            other => other,
        }
    }

    /// Blocks until the container has exited.
    fn wait_container(&self, id: &str) -> Result<Exit, ShimError> {
        let mut containers = self.lock();
        loop {
            let container = containers
                .get(id)
                .ok_or_else(|| ShimError::NotFound(id.to_string()))?;
            if let Some(exit) = container.exit {
                return Ok(exit);
            }
            containers = self
                .exited
                .wait(containers)
                .unwrap_or_else(|poison| poison.into_inner());
        }
    }

    fn delete_container(&self, id: &str) -> Result<(i32, Option<Exit>), ShimError> {
        let (bundle, pid, running) = {
            let containers = self.lock();
            let container = containers
                .get(id)
                .ok_or_else(|| ShimError::NotFound(id.to_string()))?;
            (
                container.bundle.clone(),
                container.pid,
                container.started && container.exit.is_none(),
            )
        };
        if running {
            return Err(ShimError::FailedPrecondition(format!(
                "container {id} is running: stop it first"
            )));
        }
        self.runc.delete(&self.reaper, id, &bundle)?;
        let container = self.lock().remove(id);
        let exit = container.and_then(|container| {
            for copier in container.copiers {
                let _ = copier.join();
            }
            container.exit
        });
        Ok((pid, exit))
    }

    fn state_of(&self, id: &str) -> Result<StateResponse, ShimError> {
        let containers = self.lock();
        let container = containers
            .get(id)
            .ok_or_else(|| ShimError::NotFound(id.to_string()))?;
        let status = match (container.started, container.exit) {
            (_, Some(_)) => Status::STOPPED,
            (true, None) => Status::RUNNING,
            (false, None) => Status::CREATED,
        };
        Ok(StateResponse {
            id: id.to_string(),
            bundle: container.bundle.display().to_string(),
            pid: container.pid as u32,
            status: status.into(),
            exit_status: container.exit.map_or(0, |exit| exit.status as u32),
            exited_at: container.exit.map(|exit| timestamp(exit.at)).into(),
            stdout: container.log_path(),
            ..StateResponse::default()
        })
    }
}

impl Container {
    fn log_path(&self) -> String {
        self.log.path().display().to_string()
    }
}

impl Task for TaskService {
    fn create(
        &self,
        _: &TtrpcContext,
        request: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        let pid = self.create_container(&request)?;
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..CreateTaskResponse::default()
        })
    }

    fn start(&self, _: &TtrpcContext, request: StartRequest) -> ttrpc::Result<StartResponse> {
        let pid = self.start_container(&request.id)?;
        Ok(StartResponse {
            pid: pid as u32,
            ..StartResponse::default()
        })
    }

    fn kill(&self, _: &TtrpcContext, request: KillRequest) -> ttrpc::Result<Empty> {
        self.kill_container(&request)?;
        Ok(Empty::default())
    }

    fn wait(&self, _: &TtrpcContext, request: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let exit = self.wait_container(&request.id)?;
        Ok(WaitResponse {
            exit_status: exit.status as u32,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..WaitResponse::default()
        })
    }

    fn state(&self, _: &TtrpcContext, request: StateRequest) -> ttrpc::Result<StateResponse> {
        Ok(self.state_of(&request.id)?)
    }

    fn delete(&self, _: &TtrpcContext, request: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let (pid, exit) = self.delete_container(&request.id)?;
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status: exit.map_or(0, |exit| exit.status as u32),
            exited_at: exit.map(|exit| timestamp(exit.at)).into(),
            ..DeleteResponse::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, request: ShutdownRequest) -> ttrpc::Result<Empty> {
        if !request.now && !self.lock().is_empty() {
            return Err(
                ShimError::FailedPrecondition("the shim still has containers".into()).into(),
            );
        }
        let _ = self
            .shutdown
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .send(());
        Ok(Empty::default())
    }
}

fn timestamp(time: SystemTime) -> Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Timestamp::default()
    }
}

fn pipe() -> Result<(File, std::io::PipeWriter), ShimError> {
    let (reader, writer) = std::io::pipe().map_err(|source| ShimError::Io {
        what: "create a pipe",
        source,
    })?;
    Ok((File::from(OwnedFd::from(reader)), writer))
}

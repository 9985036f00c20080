//! criusd's side of the shims: start one per pod sandbox, connect to it over ttrpc, and
//! reconnect to the shims that outlived a criusd restart.
//!
//! Calls are blocking ttrpc calls with deadlines; async callers run them on blocking
//! threads. A shim's directory is `<state>/shims/<sandbox-id>/` (socket, log, runc root).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::api::{
    CreateTaskRequest, DeleteRequest, KillRequest, ShutdownRequest, StartRequest, StateRequest,
    Status, WaitRequest,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::ttrpc::{self, context};
use containerd_shim_protos::TaskClient;

use super::daemon::socket_path;
use super::ShimError;

/// Deadline of a shim call that should answer at once.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts and finds shims.
pub struct ShimManager {
    /// The `crius-shim` binary.
    shim_binary: PathBuf,
    /// The OCI runtime the shims run containers with.
    runtime: PathBuf,
    /// `<state>/shims`.
    dir: PathBuf,
}

/// A connection to one pod's shim.
pub struct Shim {
    socket: String,
    client: TaskClient,
}

/// A container's exit as the shim reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i32,
    pub at: SystemTime,
}

/// A container's state as the shim reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskState {
    pub pid: u32,
    pub status: TaskStatus,
    pub exit: Option<ExitStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Created,
    Running,
    Stopped,
    Unknown,
}

impl ShimManager {
    pub fn new(shim_binary: &Path, runtime: &Path, state: &Path) -> ShimManager {
        ShimManager {
            shim_binary: shim_binary.to_path_buf(),
            runtime: runtime.to_path_buf(),
            dir: state.join("shims"),
        }
    }

    /// The directory of the shim of `sandbox_id`.
    pub fn shim_dir(&self, sandbox_id: &str) -> PathBuf {
        self.dir.join(sandbox_id)
    }

    /// Starts the shim of `sandbox_id` and connects to it.
    pub fn start(&self, sandbox_id: &str) -> Result<Shim, ShimError> {
        let output = Command::new(&self.shim_binary)
            .arg("start")
            .arg("--id")
            .arg(sandbox_id)
            .arg("--dir")
            .arg(self.shim_dir(sandbox_id))
            .arg("--runtime")
            .arg(&self.runtime)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| ShimError::Io {
                what: "run crius-shim start",
                source,
            })?;
        if !output.status.success() {
            return Err(ShimError::FailedPrecondition(format!(
                "crius-shim start for {sandbox_id} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let address = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Shim::connect(&address)
    }

    /// Connects to the running shim of `sandbox_id` (after a criusd restart).
    pub fn connect(&self, sandbox_id: &str) -> Result<Shim, ShimError> {
        Shim::connect(&format!(
            "unix://{}",
            socket_path(&self.shim_dir(sandbox_id)).display()
        ))
    }
}

impl Shim {
    fn connect(address: &str) -> Result<Shim, ShimError> {
        let client = ttrpc::Client::connect(address).map_err(|source| ShimError::Rpc {
            socket: address.to_string(),
            source,
        })?;
        Ok(Shim {
            socket: address.to_string(),
            client: TaskClient::new(client),
        })
    }

    /// Creates container `id` from the OCI bundle at `bundle`; its output goes to the CRI
    /// log file `log`. Returns the container init's pid.
    pub fn create(&self, id: &str, bundle: &Path, log: &Path) -> Result<u32, ShimError> {
        let request = CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            stdout: log.display().to_string(),
            stderr: log.display().to_string(),
            ..CreateTaskRequest::default()
        };
        let response = self
            .client
            .create(deadline(), &request)
            .map_err(|err| self.error(err))?;
        Ok(response.pid)
    }

    pub fn start(&self, id: &str) -> Result<u32, ShimError> {
        let request = StartRequest {
            id: id.to_string(),
            ..StartRequest::default()
        };
        Ok(self
            .client
            .start(deadline(), &request)
            .map_err(|err| self.error(err))?
            .pid)
    }

    /// Sends `signal` to the container's init (to all its processes with `all`).
    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), ShimError> {
        let request = KillRequest {
            id: id.to_string(),
            signal,
            all,
            ..KillRequest::default()
        };
        self.client
            .kill(deadline(), &request)
            .map_err(|err| self.error(err))?;
        Ok(())
    }

    /// Blocks until the container exits, or `timeout` passes (`None` then).
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<Option<ExitStatus>, ShimError> {
        let request = WaitRequest {
            id: id.to_string(),
            ..WaitRequest::default()
        };
        match self.client.wait(context::with_duration(timeout), &request) {
            Ok(response) => Ok(Some(ExitStatus {
                code: response.exit_status as i32,
                at: time_of(response.exited_at.as_ref()),
            })),
            Err(ttrpc::Error::Others(message)) if message.contains("timeout") => Ok(None),
            Err(ttrpc::Error::RpcStatus(status))
                if status.code() == ttrpc::Code::DEADLINE_EXCEEDED =>
            {
                Ok(None)
            }
            Err(err) => Err(self.error(err)),
        }
    }

    pub fn state(&self, id: &str) -> Result<TaskState, ShimError> {
        let request = StateRequest {
            id: id.to_string(),
            ..StateRequest::default()
        };
        let response = self
            .client
            .state(deadline(), &request)
            .map_err(|err| self.error(err))?;
        let status = match response.status.enum_value() {
            Ok(Status::CREATED) => TaskStatus::Created,
            Ok(Status::RUNNING) => TaskStatus::Running,
            Ok(Status::STOPPED) => TaskStatus::Stopped,
            _ => TaskStatus::Unknown,
        };
        let exit = (status == TaskStatus::Stopped).then(|| ExitStatus {
            code: response.exit_status as i32,
            at: time_of(response.exited_at.as_ref()),
        });
        Ok(TaskState {
            pid: response.pid,
            status,
            exit,
        })
    }

    /// Removes a stopped (or never started) container.
    pub fn delete(&self, id: &str) -> Result<Option<ExitStatus>, ShimError> {
        let request = DeleteRequest {
            id: id.to_string(),
            ..DeleteRequest::default()
        };
        let response = self
            .client
            .delete(deadline(), &request)
            .map_err(|err| self.error(err))?;
        Ok(response.exited_at.as_ref().map(|at| ExitStatus {
            code: response.exit_status as i32,
            at: time_of(Some(at)),
        }))
    }

    /// Asks the shim to exit; it refuses while it has containers unless `now`.
    pub fn shutdown(&self, now: bool) -> Result<(), ShimError> {
        let request = ShutdownRequest {
            now,
            ..ShutdownRequest::default()
        };
        match self.client.shutdown(deadline(), &request) {
            // The shim may close the connection before its answer arrives.
            Ok(_) | Err(ttrpc::Error::LocalClosed) | Err(ttrpc::Error::RemoteClosed) => Ok(()),
            Err(err) => Err(self.error(err)),
        }
    }

    fn error(&self, source: ttrpc::Error) -> ShimError {
        if let ttrpc::Error::RpcStatus(status) = &source {
            let message = status.message().to_string();
            match status.code() {
                ttrpc::Code::NOT_FOUND => return ShimError::NotFound(message),
                ttrpc::Code::ALREADY_EXISTS => return ShimError::AlreadyExists(message),
                ttrpc::Code::INVALID_ARGUMENT => return ShimError::InvalidArgument(message),
                ttrpc::Code::FAILED_PRECONDITION => return ShimError::FailedPrecondition(message),
                _ => {}
            }
        }
        ShimError::Rpc {
            socket: self.socket.clone(),
            source,
        }
    }
}

fn deadline() -> context::Context {
    context::with_duration(CALL_TIMEOUT)
}

fn time_of(timestamp: Option<&Timestamp>) -> SystemTime {
    timestamp.map_or(UNIX_EPOCH, |t| {
        UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
    })
}

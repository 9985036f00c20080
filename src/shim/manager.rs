//! criusd's side of the shims: start one per pod sandbox, connect to it over ttrpc,
//! reconnect to the shims that outlived a criusd restart, and receive their task events.
//!
//! Every shim, crius-shim or another shim v2 binary (containerd-shim-runc-v2), is started
//! and reconnected through one path, containerd's protocol ([`super::launcher`]): a pod's
//! crius-shim is `crius-shim -namespace crius -address <events socket> -publish-binary
//! <criusd> -id <sandbox id> -socket <state>/s/<id> [-runtime … -netns … -new-ipc
//! -new-pid -hostname …] start`, run in its directory. The events socket,
//! `<state>/events.sock`, is served here ([`super::events::EventServer`]) and receives the
//! events of every shim started here.
//!
//! Calls are blocking ttrpc calls with deadlines; async callers run them on blocking
//! threads. A pod shim's directory is `<state>/shims/<sandbox-id>/` (its working
//! directory: bootstrap, log FIFO, `shim.log`, runc root, and `execs/`, where ExecSync's
//! output files live while it runs).

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, CreateTaskRequest, DeleteRequest, ExecProcessRequest,
    KillRequest, PidsRequest, ResizePtyRequest, ShutdownRequest, StartRequest, StateRequest,
    StatsRequest, Status, UpdateTaskRequest, WaitRequest,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::ttrpc::{self, context};

use super::daemon::{attach_socket_of, PodNamespaces};
use super::events::{EventServer, TaskEvents};
use super::launcher::{Bootstrap, Launcher, ShimCommand};
use super::metrics::{unpack, TaskMetrics};
use super::removed;
use super::runc::OciRuntime;
use super::stdio_uri::file_uri;
use super::task::check_exec_id;
use super::task::REOPEN_LOG_ANNOTATION;
use super::task_api::{TaskApi, TaskApiVersion};
use super::ShimError;

/// Deadline of a shim call that should answer at once.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The type of an exec's spec, as containerd marks the OCI Process it sends.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// SIGKILL, as the Task API carries signals.
const SIGKILL: u32 = 9;

/// The containerd namespace criusd runs its tasks in (containerd's CRI uses `k8s.io`).
pub const NAMESPACE: &str = "crius";

/// Starts and finds shims.
pub struct ShimManager {
    /// The `crius-shim` binary (which also embeds an OCI runtime).
    shim_binary: PathBuf,
    /// `<state>/shims`.
    dir: PathBuf,
    /// `<state>/s`: the shims' sockets.
    sockets: PathBuf,
    /// What every shim is started with: namespace, events address, publish binary.
    launcher: Launcher,
    /// `<state>/events.sock`: where the shims' events arrive.
    events: EventServer,
}

/// Longest unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// A connection to one shim.
pub struct Shim {
    /// Its address.
    socket: String,
    /// Speaks the Task API version the shim serves.
    client: TaskApi,
    /// The shim's working directory (see the module header).
    dir: PathBuf,
    /// The runtime options sent with every Create.
    options: Option<Any>,
}

/// What an exec'd process left behind: CRI ExecSync's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// As the reaper reports it: 128 + the signal for a killed process (137 after a
    /// timeout).
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The timeout passed and the exec's process tree was killed.
    pub timed_out: bool,
}

/// The processes of a shim whose `/proc/<pid>/ns/*` are its pod's namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimPids {
    /// The shim: the pod's network, IPC and UTS namespaces.
    pub shim: u32,
    /// Pid 1 of the pod's shared PID namespace; none without one.
    pub pid_namespace_init: Option<u32>,
}

/// A task's stdio besides its output: a terminal, and a stdin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIo {
    /// Run it with a pseudo-terminal (its OCI process's `terminal` must say so too);
    /// its output is then one stream.
    pub terminal: bool,
    /// A FIFO (or file) the shim feeds into its stdin until every writer closed it or
    /// [`Shim::close_stdin`]; without one, stdin is `/dev/null` (or, with a terminal, the
    /// terminal, which nobody types into).
    pub stdin: Option<PathBuf>,
}

/// Where an exec'd process's output goes: files, appended to as raw bytes (`None`:
/// `/dev/null`); with a terminal, all of it goes to `stdout`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutputFiles {
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
}

/// A process of a container, as the shim lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProcess {
    pub pid: u32,
    /// The exec it was started as; `None` for the init and whatever the container
    /// started itself.
    pub exec_id: Option<String>,
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
    /// A manager of the shims under `state`, serving their events on
    /// `<state>/events.sock`, in the [`NAMESPACE`] namespace.
    pub fn new(shim_binary: &Path, state: &Path) -> Result<ShimManager, ShimError> {
        let events = EventServer::serve(&state.join("events.sock"))?;
        let publish_binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("criusd"));
        Ok(ShimManager {
            shim_binary: shim_binary.to_path_buf(),
            dir: state.join("shims"),
            sockets: state.join("s"),
            launcher: Launcher {
                namespace: NAMESPACE.to_string(),
                address: events.address(),
                publish_binary,
            },
            events,
        })
    }

    /// The same manager running its tasks in containerd namespace `namespace`.
    pub fn with_namespace(mut self, namespace: &str) -> ShimManager {
        self.launcher.namespace = namespace.to_string();
        self
    }

    /// The events received from the shims started here.
    pub fn events(&self) -> &std::sync::Arc<TaskEvents> {
        self.events.events()
    }

    /// The address shims publish events to.
    pub fn events_address(&self) -> String {
        self.events.address()
    }

    /// Stops receiving events and removes their socket (criusd's shutdown).
    pub fn stop_events(&self) {
        self.events.stop();
    }

    /// Starts any shim v2 binary as containerd would (see [`super::launcher`]) and
    /// connects to it. The shim's log is copied into criusd's until the shim is gone.
    /// Blocking.
    pub fn start_shim(&self, command: &ShimCommand) -> Result<Shim, ShimError> {
        let (bootstrap, log) = self.launcher.start(command)?;
        let shim = Shim::open(
            &bootstrap,
            &self.launcher.namespace,
            command.work_dir.clone(),
            command.options.clone(),
        )?;
        log.drain(&command.id, shim.pids().ok().map(|pids| pids.shim));
        Ok(shim)
    }

    /// Reconnects to the shim started in `work_dir` (after a criusd restart), from the
    /// bootstrap kept there; `options` as it was started with. Blocking.
    pub fn connect_shim(&self, work_dir: &Path, options: Option<Any>) -> Result<Shim, ShimError> {
        let bootstrap = Bootstrap::load(work_dir)?.ok_or_else(|| {
            ShimError::NotFound(format!("no shim was started in {}", work_dir.display()))
        })?;
        let shim = Shim::open(
            &bootstrap,
            &self.launcher.namespace,
            work_dir.to_path_buf(),
            options,
        )?;
        // Reading again: nobody read its log while criusd was away.
        if let Ok(log) = super::launcher::ShimLog::open(work_dir) {
            let id = work_dir.file_name().unwrap_or_default().to_string_lossy();
            log.drain(&id, shim.pids().ok().map(|pids| pids.shim));
        }
        Ok(shim)
    }

    /// Runs `command`'s `delete` for a task whose shim is gone (containerd's cleanup of a
    /// dead shim); returns the exit the shim reports. Blocking.
    pub fn delete_task(
        &self,
        command: &ShimCommand,
        bundle: &Path,
    ) -> Result<ExitStatus, ShimError> {
        let response = self.launcher.delete(command, bundle)?;
        Ok(ExitStatus {
            code: response.exit_status as i32,
            at: time_of(response.exited_at.as_ref()),
        })
    }

    /// The directory of the shim of `sandbox_id`.
    pub fn shim_dir(&self, sandbox_id: &str) -> PathBuf {
        self.dir.join(sandbox_id)
    }

    /// Where the shim of `sandbox_id` hands out its containers' output to attach clients
    /// (crius-shim's, see [`attach_socket_of`]).
    pub fn attach_socket(&self, sandbox_id: &str) -> PathBuf {
        attach_socket_of(&self.sockets.join(sandbox_id))
    }

    /// The socket of the shim of `sandbox_id`: `<state>/s/<id>`, short because a unix
    /// socket path may not exceed 107 bytes (nor may its attach socket's, a little longer).
    pub fn socket(&self, sandbox_id: &str) -> Result<PathBuf, ShimError> {
        let socket = self.sockets.join(sandbox_id);
        if attach_socket_of(&socket).as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ShimError::InvalidArgument(format!(
                "shim socket path {} is longer than {MAX_SOCKET_PATH} bytes: choose a shorter `state` directory",
                socket.display()
            )));
        }
        Ok(socket)
    }

    /// Starts the shim of `sandbox_id`, running containers with `runtime` and holding the
    /// pod's own `namespaces` (with `hostname` in a new UTS namespace), and connects to it.
    /// Blocking.
    pub fn start(
        &self,
        sandbox_id: &str,
        runtime: &OciRuntime,
        namespaces: PodNamespaces,
        hostname: Option<&str>,
    ) -> Result<Shim, ShimError> {
        let mut extra_args: Vec<OsString> = vec![
            "-socket".into(),
            self.socket(sandbox_id)?.into(),
            "-runtime".into(),
            PathBuf::from(runtime.clone()).into(),
        ];
        if let Some(netns) = &namespaces.network {
            extra_args.extend(["-netns".into(), netns.into()]);
        }
        if namespaces.ipc {
            extra_args.push("-new-ipc".into());
        }
        if namespaces.pid {
            extra_args.push("-new-pid".into());
        }
        if let (true, Some(hostname)) = (namespaces.uts, hostname) {
            extra_args.extend(["-hostname".into(), hostname.into()]);
        }
        let work_dir = self.shim_dir(sandbox_id);
        std::fs::create_dir_all(&work_dir).map_err(|source| ShimError::Io {
            what: "create the shim directory",
            source,
        })?;
        self.start_shim(&ShimCommand {
            binary: self.shim_binary.clone(),
            id: sandbox_id.to_string(),
            work_dir,
            extra_args,
            options: None,
        })
    }

    /// Kills and deletes container `id` of a pod whose shim died, with the pod's OCI
    /// `runtime` itself: the shim kept the runtime's state under its own directory, and
    /// without the shim nothing else would ever stop the container. Deleting what the
    /// runtime does not know succeeds. Blocking.
    pub fn delete_orphan(
        &self,
        sandbox_id: &str,
        id: &str,
        runtime: &OciRuntime,
    ) -> Result<(), ShimError> {
        let work_dir = self.shim_dir(sandbox_id);
        if !work_dir.join("runc").join(id).exists() {
            return Ok(());
        }
        // `crius-shim … delete` in the pod shim's directory, as containerd cleans up
        // after a dead shim.
        let command = ShimCommand {
            binary: self.shim_binary.clone(),
            id: id.to_string(),
            work_dir: work_dir.clone(),
            extra_args: vec!["-runtime".into(), PathBuf::from(runtime.clone()).into()],
            options: None,
        };
        self.delete_task(&command, &work_dir).map(|_| ())
    }

    /// Deletes the directory of the exited shim of `sandbox_id` (its logs, bootstrap, the
    /// runtime's state) and its socket, if left. Deleting what is gone succeeds.
    pub fn remove_files(&self, sandbox_id: &str) -> Result<(), ShimError> {
        let what = "remove the shim's files";
        removed(std::fs::remove_dir_all(self.shim_dir(sandbox_id)), what)?;
        removed(std::fs::remove_file(self.attach_socket(sandbox_id)), what)?;
        removed(std::fs::remove_file(self.sockets.join(sandbox_id)), what)
    }

    /// Connects to the running shim of `sandbox_id` (after a criusd restart).
    pub fn connect(&self, sandbox_id: &str) -> Result<Shim, ShimError> {
        let work_dir = self.shim_dir(sandbox_id);
        if Bootstrap::load(&work_dir)?.is_some() {
            return self.connect_shim(&work_dir, None);
        }
        // A shim started by a criusd from before the shim v2 start protocol: it kept no
        // bootstrap and serves the Task API under its v3 name only.
        let legacy = Bootstrap {
            version: TaskApiVersion::V3.number(),
            address: format!("unix://{}", self.socket(sandbox_id)?.display()),
            protocol: "ttrpc".to_string(),
        };
        Shim::open(&legacy, &self.launcher.namespace, work_dir, None)
    }
}

impl Shim {
    /// Connects to the shim that `bootstrap` describes, in containerd namespace
    /// `namespace`.
    fn open(
        bootstrap: &Bootstrap,
        namespace: &str,
        dir: PathBuf,
        options: Option<Any>,
    ) -> Result<Shim, ShimError> {
        Ok(Shim {
            socket: bootstrap.address.clone(),
            client: bootstrap.connect(namespace)?,
            dir,
            options,
        })
    }

    /// The address the shim serves on.
    pub fn address(&self) -> &str {
        &self.socket
    }

    /// The Task API version the shim is spoken to in.
    pub fn api_version(&self) -> TaskApiVersion {
        self.client.version()
    }

    /// Reopens container `id`'s log file at its path (after kubelet rotated it).
    pub fn reopen_log(&self, id: &str) -> Result<(), ShimError> {
        let request = UpdateTaskRequest {
            id: id.to_string(),
            annotations: [(REOPEN_LOG_ANNOTATION.to_string(), String::new())]
                .into_iter()
                .collect(),
            ..UpdateTaskRequest::default()
        };
        self.client
            .update(deadline(), &request)
            .map_err(|err| self.error(err))?;
        Ok(())
    }

    /// The processes that hold the pod's namespaces.
    pub fn pids(&self) -> Result<ShimPids, ShimError> {
        let response = self
            .client
            .connect(deadline(), &ConnectRequest::default())
            .map_err(|err| self.error(err))?;
        Ok(ShimPids {
            shim: response.shim_pid,
            // The Task API's "task pid" of a shim: its pod's init, as a pause container's
            // would be.
            pid_namespace_init: (response.task_pid != 0).then_some(response.task_pid),
        })
    }

    /// Creates container `id` from the OCI bundle at `bundle`; its output goes to the log
    /// file `log` (crius-shim writes it in the CRI format, other shims raw). Returns the
    /// container init's pid.
    pub fn create(&self, id: &str, bundle: &Path, log: &Path) -> Result<u32, ShimError> {
        self.create_with_io(id, bundle, log, &TaskIo::default())
    }

    /// [`Shim::create`] with a terminal or a stdin, as `io` asks.
    pub fn create_with_io(
        &self,
        id: &str,
        bundle: &Path,
        log: &Path,
        io: &TaskIo,
    ) -> Result<u32, ShimError> {
        // `file://`: one file for both streams, containerd's form for a log file.
        let log = file_uri(log);
        let request = CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.display().to_string(),
            stdout: log.clone(),
            stderr: log,
            options: self.options.clone().into(),
            terminal: io.terminal,
            stdin: path_text(io.stdin.as_deref()),
            ..CreateTaskRequest::default()
        };
        let response = self
            .client
            .create(deadline(), &request)
            .map_err(|err| self.error(err))?;
        Ok(response.pid)
    }

    pub fn start(&self, id: &str) -> Result<u32, ShimError> {
        self.start_process(id, "")
    }

    /// Starts the container's init, or its exec `exec_id` when not empty; returns its pid.
    pub fn start_process(&self, id: &str, exec_id: &str) -> Result<u32, ShimError> {
        let request = StartRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
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
        self.kill_process(id, "", signal, all)
    }

    /// Sends `signal` to the container's init, or to its exec `exec_id` when not empty
    /// (to the exec's whole process tree with `all`).
    pub fn kill_process(
        &self,
        id: &str,
        exec_id: &str,
        signal: u32,
        all: bool,
    ) -> Result<(), ShimError> {
        let request = KillRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
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
        self.wait_process(id, "", Some(timeout))
    }

    /// Blocks until the container's init (or its exec `exec_id`, when not empty) exits,
    /// or `timeout` passes (`None` then); a `None` timeout waits for as long as it takes.
    pub fn wait_process(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<ExitStatus>, ShimError> {
        let request = WaitRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..WaitRequest::default()
        };
        // ttrpc reads a zero duration as "no deadline": a zero timeout must still expire.
        let deadline = timeout.map_or_else(context::Context::default, |timeout| {
            context::with_duration(timeout.max(Duration::from_nanos(1)))
        });
        match self.client.wait(deadline, &request) {
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
        self.delete_process(id, "")
    }

    /// Removes a stopped (or never started) container, or its exec `exec_id` when not
    /// empty.
    pub fn delete_process(&self, id: &str, exec_id: &str) -> Result<Option<ExitStatus>, ShimError> {
        let request = DeleteRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
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

    /// Runs `process_json` (an OCI runtime-spec Process) in the running container
    /// `container_id` as exec `exec_id` and collects its exit code and output (CRI
    /// ExecSync). Blocking.
    ///
    /// Output goes to `execs/<exec_id>.{out,err}` in the shim's directory and at most
    /// `output_cap` bytes of each are returned (CRI caps at 16 MiB); the files are removed
    /// whatever happens. When `timeout` (`None`: no limit) passes, the exec's whole process
    /// tree is killed with SIGKILL, the call waits for its exit and reports `timed_out`;
    /// the container itself is left alone. The exec is deleted from the shim before this
    /// returns, also on errors once it has started.
    pub fn exec_sync(
        &self,
        container_id: &str,
        exec_id: &str,
        process_json: &[u8],
        timeout: Option<Duration>,
        output_cap: usize,
    ) -> Result<ExecOutput, ShimError> {
        check_exec_id(exec_id)?;
        let files = ExecFiles::new(&self.dir, exec_id)?;
        let output = ExecOutputFiles {
            stdout: Some(files.stdout.clone()),
            stderr: Some(files.stderr.clone()),
        };
        self.exec(
            container_id,
            exec_id,
            process_json,
            &TaskIo::default(),
            &output,
        )?;
        let ran = self.run_exec(container_id, exec_id, timeout);
        // Also after a failed start: the shim keeps a failed exec as CREATED.
        let deleted = self.delete_process(container_id, exec_id);
        let (exit, timed_out) = ran?;
        deleted?;
        Ok(ExecOutput {
            exit_code: exit.code,
            stdout: read_capped(&files.stdout, output_cap)?,
            stderr: read_capped(&files.stderr, output_cap)?,
            timed_out,
        })
    }

    /// Creates the FIFOs of a streamed exec `exec_id` (stdin, stdout, stderr as asked),
    /// to pass to [`Shim::exec`] as its stdin and output files: the shim feeds its stdin
    /// from the first and writes its output into the others, as it does with files.
    pub fn exec_fifos(
        &self,
        exec_id: &str,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<ExecFifos, ShimError> {
        check_exec_id(exec_id)?;
        let dir = self.dir.join("execs");
        std::fs::create_dir_all(&dir).map_err(|source| ShimError::Io {
            what: "create the shim's exec directory",
            source,
        })?;
        let mut fifos = ExecFifos::default();
        for (wanted, slot, suffix) in [
            (stdin, &mut fifos.stdin, "in"),
            (stdout, &mut fifos.stdout, "out"),
            (stderr, &mut fifos.stderr, "err"),
        ] {
            if wanted {
                let path = dir.join(format!("{exec_id}.{suffix}"));
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|errno| ShimError::Io {
                        what: "create an exec's FIFO",
                        source: errno.into(),
                    })?;
                // In the set at once: removed on drop even if a later one fails.
                *slot = Some(path);
            }
        }
        Ok(fifos)
    }

    /// Starts the created exec and waits for its exit, killing its process tree once
    /// `timeout` passes; returns its exit and whether it timed out. Once started, the
    /// exec has exited when this returns, also with an error, unless even SIGKILL failed.
    fn run_exec(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Option<Duration>,
    ) -> Result<(ExitStatus, bool), ShimError> {
        self.start_process(id, exec_id)?;
        let waited = self.wait_process(id, exec_id, timeout);
        if let Ok(Some(exit)) = waited {
            return Ok((exit, false));
        }
        // Timed out, or the wait failed: nothing the exec started may outlive the call.
        let killed = self.kill_process(id, exec_id, SIGKILL, true);
        let exit = self.wait_process(id, exec_id, Some(CALL_TIMEOUT));
        waited?;
        killed?;
        match exit? {
            Some(exit) => Ok((exit, true)),
            None => Err(ShimError::FailedPrecondition(format!(
                "exec {exec_id} of container {id} outlived SIGKILL by {CALL_TIMEOUT:?}"
            ))),
        }
    }

    /// Registers `process_json` (an OCI runtime-spec Process) as exec `exec_id` of the
    /// running container `container_id`, with `io` and its output going to `output`; it
    /// runs once started ([`Shim::start_process`]).
    pub fn exec(
        &self,
        container_id: &str,
        exec_id: &str,
        process_json: &[u8],
        io: &TaskIo,
        output: &ExecOutputFiles,
    ) -> Result<(), ShimError> {
        let request = ExecProcessRequest {
            id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            terminal: io.terminal,
            stdin: path_text(io.stdin.as_deref()),
            stdout: path_text(output.stdout.as_deref()),
            stderr: path_text(output.stderr.as_deref()),
            spec: MessageField::some(Any {
                type_url: PROCESS_TYPE_URL.to_string(),
                value: process_json.to_vec(),
                ..Any::default()
            }),
            ..ExecProcessRequest::default()
        };
        self.client
            .exec(deadline(), &request)
            .map_err(|err| self.error(err))?;
        Ok(())
    }

    /// Asks the shim to exit; it refuses while it has containers unless `now`.
    pub fn shutdown(&self, now: bool) -> Result<(), ShimError> {
        let request = ShutdownRequest {
            now,
            ..ShutdownRequest::default()
        };
        match self.client.shutdown(deadline(), &request) {
            // The shim may close the connection before its answer arrives, which ttrpc
            // reports one way or another depending on when it noticed
            // (containerd-shim-runc-v2 exits that fast).
            Ok(_)
            | Err(ttrpc::Error::LocalClosed)
            | Err(ttrpc::Error::RemoteClosed)
            | Err(ttrpc::Error::Socket(_)) => Ok(()),
            Err(err) => Err(self.error(err)),
        }
    }

    /// Closes the stdin of container `id`'s init, or of its exec `exec_id` when not
    /// empty: it reads EOF after what the shim had passed on to it.
    pub fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), ShimError> {
        let request = CloseIORequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin: true,
            ..CloseIORequest::default()
        };
        self.client
            .close_io(deadline(), &request)
            .map_err(|err| self.error(err))?;
        Ok(())
    }

    /// Sets the window size of the terminal of container `id`'s init, or of its exec
    /// `exec_id` when not empty.
    pub fn resize_pty(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), ShimError> {
        let request = ResizePtyRequest {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            width,
            height,
            ..ResizePtyRequest::default()
        };
        self.client
            .resize_pty(deadline(), &request)
            .map_err(|err| self.error(err))?;
        Ok(())
    }

    /// The processes of container `id`.
    pub fn processes(&self, id: &str) -> Result<Vec<TaskProcess>, ShimError> {
        let request = PidsRequest {
            id: id.to_string(),
            ..PidsRequest::default()
        };
        let response = self
            .client
            .pids(deadline(), &request)
            .map_err(|err| self.error(err))?;
        response
            .processes
            .iter()
            .map(|process| {
                let details = match process.info.as_ref() {
                    Some(info) => unpack::<ProcessDetails>(info)?,
                    None => None,
                };
                Ok(TaskProcess {
                    pid: process.pid,
                    exec_id: details.map(|details| details.exec_id),
                })
            })
            .collect()
    }

    /// The cgroup metrics of container `id`.
    pub fn stats(&self, id: &str) -> Result<TaskMetrics, ShimError> {
        let request = StatsRequest {
            id: id.to_string(),
            ..StatsRequest::default()
        };
        let response = self
            .client
            .stats(deadline(), &request)
            .map_err(|err| self.error(err))?;
        let stats = response.stats.as_ref().ok_or_else(|| {
            ShimError::InvalidArgument(format!("stats of container {id}: none in the answer"))
        })?;
        TaskMetrics::unpack(stats)
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

/// The FIFOs of a streamed exec ([`Shim::exec_fifos`]); removed on drop.
#[derive(Debug, Default)]
pub struct ExecFifos {
    pub stdin: Option<PathBuf>,
    pub stdout: Option<PathBuf>,
    pub stderr: Option<PathBuf>,
}

impl Drop for ExecFifos {
    fn drop(&mut self) {
        for path in [&self.stdin, &self.stdout, &self.stderr]
            .into_iter()
            .flatten()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An ExecSync's output files; removed on drop.
struct ExecFiles {
    stdout: PathBuf,
    stderr: PathBuf,
}

impl ExecFiles {
    /// Creates the empty files of `exec_id` under `<shim dir>/execs`.
    ///
    /// They are passed as bare paths of existing regular files, which every shim appends
    /// to stream by stream: containerd's shims open a bare path as a FIFO if it is one
    /// and append to it if it is a regular file (`pkg/process/io.go` `copyPipes`), while
    /// a `file://` URI would send stderr into stdout's file (`createIO`).
    fn new(shim_dir: &Path, exec_id: &str) -> Result<ExecFiles, ShimError> {
        let dir = shim_dir.join("execs");
        std::fs::create_dir_all(&dir).map_err(|source| ShimError::Io {
            what: "create the shim's exec directory",
            source,
        })?;
        let files = ExecFiles {
            stdout: dir.join(format!("{exec_id}.out")),
            stderr: dir.join(format!("{exec_id}.err")),
        };
        for path in [&files.stdout, &files.stderr] {
            File::create(path).map_err(|source| ShimError::Io {
                what: "create the exec's output file",
                source,
            })?;
        }
        Ok(files)
    }
}

impl Drop for ExecFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// The first `cap` bytes of the file at `path`.
fn read_capped(path: &Path, cap: usize) -> Result<Vec<u8>, ShimError> {
    let file = std::fs::File::open(path).map_err(|source| ShimError::Io {
        what: "open the exec's output",
        source,
    })?;
    let mut bytes = Vec::new();
    file.take(cap as u64)
        .read_to_end(&mut bytes)
        .map_err(|source| ShimError::Io {
            what: "read the exec's output",
            source,
        })?;
    Ok(bytes)
}

/// A path as the Task API carries it: empty for none.
fn path_text(path: Option<&Path>) -> String {
    path.map(|path| path.display().to_string())
        .unwrap_or_default()
}

fn deadline() -> context::Context {
    context::with_duration(CALL_TIMEOUT)
}

fn time_of(timestamp: Option<&Timestamp>) -> SystemTime {
    timestamp.map_or(UNIX_EPOCH, |t| {
        UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
    })
}

//! The shim's containerd shim v2 Task service: what criusd's shim manager (or containerd)
//! calls over ttrpc to run the containers of one pod.
//!
//! Container states (runc's): `create` → CREATED → `start` → RUNNING → (exit) → STOPPED →
//! `delete` → gone. Exits come from the reaper through a monitor thread that records them
//! against the containers' init pids and their exec'd processes' pids, and wakes every
//! `wait`.
//!
//! Exec'd processes (containerd's runc shim semantics; requests carry an `exec_id`):
//! `exec` → CREATED (only in a RUNNING container) → `start` (`runc exec --detach`) →
//! RUNNING → (exit) → STOPPED → `delete` → gone. A running exec is not deleted
//! (FailedPrecondition). As in containerd, a container is deleted once its init has
//! stopped whatever its execs do; their records go with the container. `kill` with `all`
//! of an exec signals the exec'd process and all its descendants (see [`signal_tree`]),
//! so that an ExecSync timeout ends what the exec started without touching the rest of
//! the container.
//!
//! Stdio (see [`super::process_io`]): a container's output goes to its CRI log, an exec'd
//! process's to its files; with `terminal` the process gets a pseudo-terminal whose
//! master the shim holds (ResizePty sets its size). `stdin` names a FIFO (or file) the
//! shim feeds into the process until its writers close it or CloseIO closes it. Pids
//! lists the container's processes (its cgroup's, its init, its execs, these marked with
//! containerd's `ProcessDetails`), and Stats answers with containerd's cgroup metrics
//! ([`super::metrics`]) from the container's cgroup.
//!
//! A container is over when its init exits. With a PID namespace of its own, the kernel
//! then kills the rest of its processes; in a namespace it shares (the pod's, the node's,
//! another container's) nothing would, so the shim kills them before it reports the exit
//! (containerd's `ShouldKillAllOnExit`).
//!
//! Task events (see [`super::events`]) are queued as containerd-shim-runc-v2 publishes
//! them: TaskCreate, TaskStart, TaskExecAdded, TaskExecStarted, TaskExit (of the init, `id`
//! = the container's id, and of every exec), TaskOOM before an init's TaskExit when the
//! container's cgroup saw an OOM kill, and TaskDelete when a container (not an exec) is
//! deleted. They are queued under the state lock where the state changes, so a process's
//! events keep their order: an init that exits while its `start` is under way has its
//! TaskExit held until TaskStart is queued.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PidsRequest,
    PidsResponse, ProcessInfo, ResizePtyRequest, ShutdownRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, StatsRequest, StatsResponse, Status, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::ttrpc::{self, TtrpcContext};
use containerd_shim_protos::Task;
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::cri_log::CriLog;
use super::events::{EventPublisher, TaskEvent, TaskIo};
use super::metrics;
use super::process_io::{self, Output, ProcessIo};
use super::reaper::{Exit, Reaper};
use super::runc::Runc;
use super::stdio_uri;
use super::ShimError;
use crate::cgroups::Cgroup;

/// How many times [`signal_tree`] looks for descendants that appeared while it was
/// stopping the ones it knew; a tree that keeps growing past this is signalled as found.
const FREEZE_ROUNDS: usize = 100;

/// Longest exec id: containerd's identifier limit.
const MAX_EXEC_ID: usize = 76;

/// Annotation of an Update request that asks the shim to reopen a container's log.
pub const REOPEN_LOG_ANNOTATION: &str = "io.crius.reopen-log";

/// How long an exited container's output may take to reach its log before the exit is
/// reported anyway.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One container of the pod, as the shim tracks it.
struct Container {
    bundle: PathBuf,
    pid: i32,
    started: bool,
    exit: Option<Exit>,
    log: Arc<CriLog>,
    /// The init's stdio: its output copiers (joined at delete so that no output is
    /// lost), its terminal, its stdin.
    io: ProcessIo,
    /// Whether its spec gives it a PID namespace of its own, so that its processes end
    /// with its init.
    owns_pid_namespace: bool,
    /// Whether the runtime's `delete` is removing it. That kills all of its processes,
    /// so the exit of its init that follows needs no killing of leftovers, which would
    /// race the delete for its cgroup and state (and write to a bundle being removed).
    deleting: bool,
    /// Its exec'd processes by exec id.
    execs: HashMap<String, ExecProcess>,
}

/// A process exec'd in a container.
struct ExecProcess {
    /// The OCI runtime-spec Process, as JSON, that `runc exec --process` reads.
    process: Vec<u8>,
    /// Paths of its stdio as the request gave them; empty for `/dev/null`. Output goes
    /// to the files as raw bytes (ExecSync wants them), not in the CRI log format.
    stdin: String,
    stdout: String,
    stderr: String,
    /// Whether it runs with a terminal (then `stdout` gets all of its output).
    terminal: bool,
    /// Its stdio once started.
    io: Option<ProcessIo>,
    state: ExecState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExecState {
    Created,
    /// `runc exec` is under way; a second `start` or a `delete` is refused meanwhile.
    Starting,
    Running {
        pid: i32,
    },
    Stopped {
        pid: i32,
        exit: Exit,
    },
}

/// Everything the service's lock guards.
#[derive(Default)]
struct State {
    containers: HashMap<String, Container>,
    /// How many `runc exec`s are under way. An exec'd process may exit before runc has
    /// told us its pid; while any start is under way the monitor keeps the exits that
    /// match no process in `unclaimed`, and the start claims its own there (containerd's
    /// shim does the same with its exit subscribers).
    exec_starts: usize,
    unclaimed: Vec<Exit>,
    /// Containers whose `runc start` is under way: their init's TaskExit waits for
    /// their TaskStart.
    starting: std::collections::HashSet<String>,
}

/// The Task service of one shim.
pub struct TaskService {
    runc: Runc,
    reaper: Arc<Reaper>,
    state: Mutex<State>,
    /// Signalled whenever a process exits and whenever one is deleted.
    exited: Condvar,
    /// Tells the shim's main thread to exit (sent by `shutdown`).
    shutdown: Mutex<Sender<()>>,
    /// Pid 1 of the pod's shared PID namespace, when the pod has one.
    pid_namespace_init: Option<u32>,
    /// Where task events go; publishing never blocks.
    events: EventPublisher,
}

impl TaskService {
    pub fn new(
        runc: Runc,
        reaper: Arc<Reaper>,
        shutdown: Sender<()>,
        pid_namespace_init: Option<u32>,
        events: EventPublisher,
    ) -> Arc<TaskService> {
        let service = Arc::new(TaskService {
            runc,
            reaper: reaper.clone(),
            state: Mutex::new(State::default()),
            exited: Condvar::new(),
            shutdown: Mutex::new(shutdown),
            pid_namespace_init,
            events,
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
                    TaskService::record_exit(&service, exit);
                }
            })
            .ok();
        service
    }

    /// Records an exit. A container's init exit is recorded once the container's other
    /// processes are killed (when they would outlive it) and its output has reached the
    /// log (bounded wait), on a thread of its own, so that whoever sees the exit can read
    /// all of the output and finds nothing of the container still running.
    fn record_exit(service: &Arc<TaskService>, exit: Exit) {
        let ended = service
            .lock()
            .containers
            .iter()
            .find(|(_, container)| container.pid == exit.pid && container.exit.is_none())
            .map(|(id, container)| {
                let leftovers = (!container.owns_pid_namespace && !container.deleting)
                    .then(|| (id.clone(), container.bundle.clone()));
                (leftovers, container.io.streams.clone())
            });
        match ended {
            Some((leftovers, streams)) => {
                let waiting = service.clone();
                let drained =
                    std::thread::Builder::new()
                        .name("exit-drain".into())
                        .spawn(move || {
                            if let Some((id, bundle)) = leftovers {
                                waiting.kill_leftovers(&id, &bundle);
                            }
                            streams.wait(OUTPUT_DRAIN_TIMEOUT);
                            waiting.claim_exit(exit);
                        });
                if drained.is_err() {
                    // No thread to wait on: record it now rather than lose it.
                    service.claim_exit(exit);
                }
            }
            None => service.claim_exit(exit),
        }
    }

    /// Kills what is left of container `id` after its init exited in a PID namespace it
    /// shares: nothing else would end those processes.
    fn kill_leftovers(&self, id: &str, bundle: &Path) {
        if let Err(err) = self
            .runc
            .kill(&self.reaper, id, bundle, Signal::SIGKILL as u32, true)
        {
            eprintln!("cannot kill what is left of container {id} after its exit: {err}");
        }
    }

    fn claim_exit(&self, exit: Exit) {
        let mut state = self.lock();
        if state.claim(exit) {
            self.publish_exit(&state, exit);
            self.exited.notify_all();
        } else if state.exec_starts > 0 {
            state.unclaimed.push(exit);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn create_container(&self, request: &CreateTaskRequest) -> Result<i32, ShimError> {
        if request.id.is_empty() || request.bundle.is_empty() {
            return Err(ShimError::InvalidArgument(
                "id and bundle are required".into(),
            ));
        }
        if self.lock().containers.contains_key(&request.id) {
            return Err(ShimError::AlreadyExists(format!(
                "container {} already exists",
                request.id
            )));
        }
        let bundle = PathBuf::from(&request.bundle);
        check_spec_terminal(&request.id, &bundle, request.terminal)?;
        let log_path = match stdio_uri::parse(&request.stdout)?.path() {
            None => bundle.join("output.log"),
            Some(path) => path.to_path_buf(),
        };
        let log = CriLog::open(&log_path).map_err(|source| ShimError::Io {
            what: "open the container log",
            source,
        })?;
        let (stdio, io) =
            process_io::setup(request.terminal, &request.stdin, Output::Log(log.clone()))?;
        // On failure the pipes' write ends close with the command, so the copiers end.
        let pid = self
            .runc
            .create(&self.reaper, &request.id, &bundle, stdio)?;
        let io = match io.attach() {
            Ok(io) => io,
            Err(err) => {
                // Nothing would ever run or remove what the runtime created.
                let _ = self.runc.delete(&self.reaper, &request.id, &bundle);
                return Err(err);
            }
        };
        let owns_pid_namespace = owns_pid_namespace(&bundle);
        let mut state = self.lock();
        self.events.publish(TaskEvent::Create {
            container_id: request.id.clone(),
            bundle: request.bundle.clone(),
            pid: pid as u32,
            io: TaskIo {
                stdin: request.stdin.clone(),
                stdout: request.stdout.clone(),
                stderr: request.stderr.clone(),
                terminal: request.terminal,
            },
        });
        state.containers.insert(
            request.id.clone(),
            Container {
                bundle,
                pid,
                started: false,
                exit: None,
                log,
                io,
                owns_pid_namespace,
                deleting: false,
                execs: HashMap::new(),
            },
        );
        Ok(pid)
    }

    fn start_container(&self, id: &str) -> Result<i32, ShimError> {
        let (bundle, pid) = {
            let mut state = self.lock();
            let container = state.container(id)?;
            if container.started || state.starting.contains(id) {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {id} was already started"
                )));
            }
            let started = (container.bundle.clone(), container.pid);
            state.starting.insert(id.to_string());
            started
        };
        let started = self.runc.start(&self.reaper, id, &bundle);
        let mut state = self.lock();
        state.starting.remove(id);
        if let Some(container) = state.containers.get_mut(id) {
            if started.is_ok() {
                container.started = true;
                self.events.publish(TaskEvent::Start {
                    container_id: id.to_string(),
                    pid: pid as u32,
                });
            }
            // An exit claimed meanwhile held its TaskExit back for this.
            if let Some(exit) = container.exit {
                self.publish_init_exit(id, container, exit);
            }
        }
        started?;
        Ok(pid)
    }

    fn kill_container(&self, request: &KillRequest) -> Result<(), ShimError> {
        let bundle = {
            let state = self.lock();
            let container = state.container(&request.id)?;
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

    /// Blocks until the container's init (or its exec `exec_id`, when not empty) has
    /// exited.
    fn wait_process(&self, id: &str, exec_id: &str) -> Result<Exit, ShimError> {
        let mut state = self.lock();
        loop {
            let container = state.container(id)?;
            let exit = if exec_id.is_empty() {
                container.exit
            } else {
                match container.exec(id, exec_id)?.state {
                    ExecState::Stopped { exit, .. } => Some(exit),
                    _ => None,
                }
            };
            if let Some(exit) = exit {
                return Ok(exit);
            }
            state = self
                .exited
                .wait(state)
                .unwrap_or_else(|poison| poison.into_inner());
        }
    }

    fn delete_container(&self, id: &str) -> Result<(i32, Option<Exit>), ShimError> {
        let (bundle, pid) = {
            let state = self.lock();
            let container = state.container(id)?;
            if container.started && container.exit.is_none() {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {id} is running: stop it first"
                )));
            }
            // Its record would go while runc exec still runs in it.
            if let Some((exec_id, _)) = container
                .execs
                .iter()
                .find(|(_, exec)| exec.state == ExecState::Starting)
            {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {id} is starting exec {exec_id}"
                )));
            }
            (container.bundle.clone(), container.pid)
        };
        self.set_deleting(id, true);
        if let Err(err) = self.runc.delete(&self.reaper, id, &bundle) {
            self.set_deleting(id, false);
            return Err(err);
        }
        let container = self.lock().containers.remove(id);
        // Waits on its execs end (NotFound).
        self.exited.notify_all();
        let exit = container.and_then(|container| {
            for copier in container.io.copiers {
                let _ = copier.join();
            }
            container.exit
        });
        self.events.publish(TaskEvent::Delete {
            container_id: id.to_string(),
            pid: pid as u32,
            exit_status: exit.map_or(0, |exit| exit.status as u32),
            exited_at: exit.map_or(UNIX_EPOCH, |exit| exit.at),
        });
        Ok((pid, exit))
    }

    fn set_deleting(&self, id: &str, deleting: bool) {
        if let Some(container) = self.lock().containers.get_mut(id) {
            container.deleting = deleting;
        }
    }

    /// Hands container `id`'s output to an attach client, from now on until it ends (see
    /// [`CriLog::attach`]).
    pub fn attach_output(
        &self,
        id: &str,
        client: std::os::unix::net::UnixStream,
    ) -> Result<(), ShimError> {
        let log = self.lock().container(id)?.log.clone();
        log.attach(client);
        Ok(())
    }

    fn state_of(&self, id: &str) -> Result<StateResponse, ShimError> {
        let state = self.lock();
        let container = state.container(id)?;
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
            terminal: container.io.console.is_some(),
            ..StateResponse::default()
        })
    }

    /// Registers exec `request.exec_id` in the running container `request.id`.
    fn create_exec(&self, request: &ExecProcessRequest) -> Result<(), ShimError> {
        check_exec_id(&request.exec_id)?;
        let process = request
            .spec
            .as_ref()
            .map(|spec| spec.value.clone())
            .ok_or_else(|| {
                ShimError::InvalidArgument(format!("exec {}: spec is required", request.exec_id))
            })?;
        check_process(&request.exec_id, &process, request.terminal)?;
        let mut state = self.lock();
        let container = state.container_mut(&request.id)?;
        if !container.is_running() {
            return Err(ShimError::FailedPrecondition(format!(
                "cannot exec in container {}: it is not running",
                request.id
            )));
        }
        if container.execs.contains_key(&request.exec_id) {
            return Err(ShimError::AlreadyExists(format!(
                "exec {} of container {} already exists",
                request.exec_id, request.id
            )));
        }
        container.execs.insert(
            request.exec_id.clone(),
            ExecProcess {
                process,
                stdin: request.stdin.clone(),
                stdout: request.stdout.clone(),
                stderr: request.stderr.clone(),
                terminal: request.terminal,
                io: None,
                state: ExecState::Created,
            },
        );
        self.events.publish(TaskEvent::ExecAdded {
            container_id: request.id.clone(),
            exec_id: request.exec_id.clone(),
        });
        Ok(())
    }

    /// Runs exec `exec_id` of container `id`; returns its pid.
    fn start_exec(&self, id: &str, exec_id: &str) -> Result<i32, ShimError> {
        let (bundle, process, terminal, stdio) = {
            let mut state = self.lock();
            let container = state.container_mut(id)?;
            if !container.is_running() {
                return Err(ShimError::FailedPrecondition(format!(
                    "cannot start exec {exec_id} in container {id}: it is not running"
                )));
            }
            let bundle = container.bundle.clone();
            let exec = container.exec_mut(id, exec_id)?;
            if exec.state != ExecState::Created {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} of container {id} was already started"
                )));
            }
            exec.state = ExecState::Starting;
            let stdio = [exec.stdin.clone(), exec.stdout.clone(), exec.stderr.clone()];
            let process = exec.process.clone();
            let terminal = exec.terminal;
            state.exec_starts += 1;
            (bundle, process, terminal, stdio)
        };
        let [stdin, stdout, stderr] = stdio;
        let output = Output::Files { stdout, stderr };
        let started = process_io::setup(terminal, &stdin, output).and_then(|(stdio, io)| {
            let pid = self
                .runc
                .exec(&self.reaper, id, &bundle, exec_id, &process, stdio)?;
            match io.attach() {
                Ok(io) => Ok((pid, io)),
                Err(err) => {
                    // Failed to start as far as the client knows: it must not run on.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    Err(err)
                }
            }
        });
        let mut state = self.lock();
        state.exec_starts -= 1;
        // The latest: an earlier holder of the pid cannot have exited after this start
        // began unless pids wrapped around meanwhile.
        let early_exit = started.as_ref().ok().and_then(|(pid, _)| {
            state
                .unclaimed
                .iter()
                .rev()
                .find(|exit| exit.pid == *pid)
                .copied()
        });
        if state.exec_starts == 0 {
            state.unclaimed.clear();
        }
        // Present: neither the exec nor its container is deleted while it is Starting.
        let exec = state.container_mut(id)?.exec_mut(id, exec_id)?;
        match started {
            Ok((pid, io)) => {
                exec.io = Some(io);
                exec.state = match early_exit {
                    Some(exit) => {
                        // A wait may already be blocked on it.
                        self.exited.notify_all();
                        ExecState::Stopped { pid, exit }
                    }
                    None => ExecState::Running { pid },
                };
                self.publish_exec_started(id, exec_id, pid, early_exit);
                Ok(pid)
            }
            Err(err) => {
                // As containerd: an exec that failed to start stays CREATED.
                exec.state = ExecState::Created;
                Err(err)
            }
        }
    }

    fn kill_exec(&self, request: &KillRequest) -> Result<(), ShimError> {
        let (id, exec_id) = (&request.id, &request.exec_id);
        let pid = match self.lock().container(id)?.exec(id, exec_id)?.state {
            ExecState::Created | ExecState::Starting => {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} of container {id} is not running"
                )))
            }
            // As for containers: stopping what has exited is a no-op.
            ExecState::Stopped { .. } => return Ok(()),
            ExecState::Running { pid } => Pid::from_raw(pid),
        };
        let signal = i32::try_from(request.signal)
            .ok()
            .and_then(|signal| Signal::try_from(signal).ok())
            .ok_or_else(|| {
                ShimError::InvalidArgument(format!("kill: no signal {}", request.signal))
            })?;
        if request.all {
            return signal_tree(pid, signal);
        }
        match kill(pid, signal) {
            // It exited after the check; its exit is on its way.
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(ShimError::Sys {
                what: "signal the exec'd process",
                source,
            }),
        }
    }

    fn delete_exec(&self, id: &str, exec_id: &str) -> Result<(i32, Option<Exit>), ShimError> {
        let mut state = self.lock();
        let container = state.container_mut(id)?;
        let deleted = match container.exec(id, exec_id)?.state {
            ExecState::Starting | ExecState::Running { .. } => {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} of container {id} is running: kill it first"
                )))
            }
            ExecState::Created => (0, None),
            ExecState::Stopped { pid, exit } => (pid, Some(exit)),
        };
        container.execs.remove(exec_id);
        // Waits on an exec that never started end (NotFound).
        self.exited.notify_all();
        Ok(deleted)
    }

    fn exec_state(&self, id: &str, exec_id: &str) -> Result<StateResponse, ShimError> {
        let state = self.lock();
        let container = state.container(id)?;
        let exec = container.exec(id, exec_id)?;
        let (status, pid, exit) = match exec.state {
            ExecState::Created | ExecState::Starting => (Status::CREATED, 0, None),
            ExecState::Running { pid } => (Status::RUNNING, pid, None),
            ExecState::Stopped { pid, exit } => (Status::STOPPED, pid, Some(exit)),
        };
        Ok(StateResponse {
            id: id.to_string(),
            exec_id: exec_id.to_string(),
            bundle: container.bundle.display().to_string(),
            pid: pid as u32,
            status: status.into(),
            exit_status: exit.map_or(0, |exit| exit.status as u32),
            exited_at: exit.map(|exit| timestamp(exit.at)).into(),
            stdin: exec.stdin.clone(),
            stdout: exec.stdout.clone(),
            stderr: exec.stderr.clone(),
            terminal: exec.terminal,
            ..StateResponse::default()
        })
    }
}

/// Task events that need more than the request at hand.
impl TaskService {
    /// Queues the TaskExit of the process `exit` ended, just claimed in `state`; an init
    /// whose `start` is under way has it queued by the start, after its TaskStart.
    fn publish_exit(&self, state: &State, exit: Exit) {
        for (id, container) in &state.containers {
            if container.pid == exit.pid && container.exit == Some(exit) {
                if !state.starting.contains(id) {
                    self.publish_init_exit(id, container, exit);
                }
                return;
            }
            for (exec_id, exec) in &container.execs {
                if exec.state
                    == (ExecState::Stopped {
                        pid: exit.pid,
                        exit,
                    })
                {
                    self.events.publish(exit_event(id, exec_id, exit));
                    return;
                }
            }
        }
    }

    /// Queues TaskOOM, if the container's cgroup saw an OOM kill, then its init's
    /// TaskExit. The cgroup still exists: the runtime removes it at delete.
    fn publish_init_exit(&self, id: &str, container: &Container, exit: Exit) {
        if oom_killed(&container.bundle) {
            self.events.publish(TaskEvent::Oom {
                container_id: id.to_string(),
            });
        }
        self.events.publish(exit_event(id, id, exit));
    }

    /// Queues TaskExecStarted, then the exec's TaskExit if it exited before runc told
    /// its pid.
    fn publish_exec_started(&self, id: &str, exec_id: &str, pid: i32, early_exit: Option<Exit>) {
        self.events.publish(TaskEvent::ExecStarted {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            pid: pid as u32,
        });
        if let Some(exit) = early_exit {
            self.events.publish(exit_event(id, exec_id, exit));
        }
    }
}

/// The TaskExit of process `process_id` (the container's id for its init) of container
/// `id`.
fn exit_event(id: &str, process_id: &str, exit: Exit) -> TaskEvent {
    TaskEvent::Exit {
        container_id: id.to_string(),
        id: process_id.to_string(),
        pid: exit.pid as u32,
        exit_status: exit.status as u32,
        exited_at: exit.at,
    }
}

/// Whether the kernel's OOM killer killed a process in the cgroup that the spec in
/// `bundle` names (`linux.cgroupsPath`); false when it names none.
fn oom_killed(bundle: &Path) -> bool {
    let spec = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    spec.as_ref()
        .and_then(|spec| spec["linux"]["cgroupsPath"].as_str())
        .filter(|path| !path.is_empty())
        .is_some_and(|path| crate::cgroups::Cgroup::new(path).oom_killed())
}

impl State {
    fn container(&self, id: &str) -> Result<&Container, ShimError> {
        self.containers
            .get(id)
            .ok_or_else(|| ShimError::NotFound(format!("container {id} not found")))
    }

    fn container_mut(&mut self, id: &str) -> Result<&mut Container, ShimError> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| ShimError::NotFound(format!("container {id} not found")))
    }

    /// Records `exit` against the running process it ends; false if none.
    fn claim(&mut self, exit: Exit) -> bool {
        for container in self.containers.values_mut() {
            if container.pid == exit.pid && container.exit.is_none() {
                container.exit = Some(exit);
                return true;
            }
            for exec in container.execs.values_mut() {
                if let ExecState::Running { pid } = exec.state {
                    if pid == exit.pid {
                        exec.state = ExecState::Stopped { pid, exit };
                        return true;
                    }
                }
            }
        }
        false
    }
}

impl Container {
    fn log_path(&self) -> String {
        self.log.path().display().to_string()
    }

    fn is_running(&self) -> bool {
        self.started && self.exit.is_none()
    }

    /// Exec `exec_id` of this container, `id`.
    fn exec(&self, id: &str, exec_id: &str) -> Result<&ExecProcess, ShimError> {
        self.execs.get(exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("exec {exec_id} of container {id} not found"))
        })
    }

    fn exec_mut(&mut self, id: &str, exec_id: &str) -> Result<&mut ExecProcess, ShimError> {
        self.execs.get_mut(exec_id).ok_or_else(|| {
            ShimError::NotFound(format!("exec {exec_id} of container {id} not found"))
        })
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
        let pid = if request.exec_id.is_empty() {
            self.start_container(&request.id)?
        } else {
            self.start_exec(&request.id, &request.exec_id)?
        };
        Ok(StartResponse {
            pid: pid as u32,
            ..StartResponse::default()
        })
    }

    fn exec(&self, _: &TtrpcContext, request: ExecProcessRequest) -> ttrpc::Result<Empty> {
        self.create_exec(&request)?;
        Ok(Empty::default())
    }

    /// Only one update is supported: reopening the container's log file after kubelet
    /// rotated it, asked for with the [`REOPEN_LOG_ANNOTATION`] annotation (the Task API
    /// has no call of its own for it; containerd keeps logs outside its shims).
    fn update(&self, _: &TtrpcContext, request: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        if !request.annotations.contains_key(REOPEN_LOG_ANNOTATION) {
            return Err(ShimError::InvalidArgument(
                "only log reopening is supported by update".into(),
            )
            .into());
        }
        let log = {
            let state = self.lock();
            let container = state.containers.get(&request.id).ok_or_else(|| {
                ShimError::NotFound(format!("container {} not found", request.id))
            })?;
            container.log.clone()
        };
        log.reopen().map_err(|source| ShimError::Io {
            what: "reopen the container log",
            source,
        })?;
        Ok(Empty::default())
    }

    fn kill(&self, _: &TtrpcContext, request: KillRequest) -> ttrpc::Result<Empty> {
        if request.exec_id.is_empty() {
            self.kill_container(&request)?;
        } else {
            self.kill_exec(&request)?;
        }
        Ok(Empty::default())
    }

    fn wait(&self, _: &TtrpcContext, request: WaitRequest) -> ttrpc::Result<WaitResponse> {
        let exit = self.wait_process(&request.id, &request.exec_id)?;
        if !request.exec_id.is_empty() {
            self.drain_exec_output(&request.id, &request.exec_id);
        }
        Ok(WaitResponse {
            exit_status: exit.status as u32,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..WaitResponse::default()
        })
    }

    fn state(&self, _: &TtrpcContext, request: StateRequest) -> ttrpc::Result<StateResponse> {
        if request.exec_id.is_empty() {
            Ok(self.state_of(&request.id)?)
        } else {
            Ok(self.exec_state(&request.id, &request.exec_id)?)
        }
    }

    fn delete(&self, _: &TtrpcContext, request: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let (pid, exit) = if request.exec_id.is_empty() {
            self.delete_container(&request.id)?
        } else {
            self.delete_exec(&request.id, &request.exec_id)?
        };
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status: exit.map_or(0, |exit| exit.status as u32),
            exited_at: exit.map(|exit| timestamp(exit.at)).into(),
            ..DeleteResponse::default()
        })
    }

    fn connect(&self, _: &TtrpcContext, _: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.pid_namespace_init.unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..ConnectResponse::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, request: ShutdownRequest) -> ttrpc::Result<Empty> {
        if !request.now && !self.lock().containers.is_empty() {
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

    /// Closes the stdin of the container's init, or of its exec `exec_id`: the process
    /// reads EOF after what the shim had passed on to it. A process without stdin has
    /// none to close.
    fn close_io(&self, _: &TtrpcContext, request: CloseIORequest) -> ttrpc::Result<Empty> {
        if request.stdin {
            self.close_stdin(&request.id, &request.exec_id)?;
        }
        Ok(Empty::default())
    }

    fn resize_pty(&self, _: &TtrpcContext, request: ResizePtyRequest) -> ttrpc::Result<Empty> {
        self.resize_terminal(&request)?;
        Ok(Empty::default())
    }

    fn pids(&self, _: &TtrpcContext, request: PidsRequest) -> ttrpc::Result<PidsResponse> {
        Ok(PidsResponse {
            processes: self.processes(&request.id)?,
            ..PidsResponse::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, request: StatsRequest) -> ttrpc::Result<StatsResponse> {
        Ok(StatsResponse {
            stats: MessageField::some(self.stats_of(&request.id)?),
            ..StatsResponse::default()
        })
    }
}

/// What the Task API asks of running processes' stdio, processes and cgroup: CloseIO,
/// ResizePty, Pids, Stats, and the output an exec's Wait waits for.
impl TaskService {
    fn close_stdin(&self, id: &str, exec_id: &str) -> Result<(), ShimError> {
        let mut state = self.lock();
        let container = state.container_mut(id)?;
        let io = if exec_id.is_empty() {
            Some(&mut container.io)
        } else {
            container.exec_mut(id, exec_id)?.io.as_mut()
        };
        if let Some(stdin) = io.and_then(|io| io.stdin.as_mut()) {
            stdin.close();
        }
        Ok(())
    }

    fn resize_terminal(&self, request: &ResizePtyRequest) -> Result<(), ShimError> {
        let (id, exec_id) = (&request.id, &request.exec_id);
        let state = self.lock();
        let container = state.container(id)?;
        let (console, whose) = if exec_id.is_empty() {
            (container.io.console.as_ref(), format!("container {id}"))
        } else {
            let exec = container.exec(id, exec_id)?;
            if exec.terminal && exec.io.is_none() {
                return Err(ShimError::FailedPrecondition(format!(
                    "exec {exec_id} of container {id} has not started: its terminal does \
                     not exist yet"
                )));
            }
            let console = exec.io.as_ref().and_then(|io| io.console.as_ref());
            (console, format!("exec {exec_id} of container {id}"))
        };
        let console = console.ok_or_else(|| {
            ShimError::FailedPrecondition(format!("{whose} has no terminal to resize"))
        })?;
        console.resize(request.width, request.height)
    }

    /// The processes of container `id` (none once it has stopped): those in its cgroup,
    /// and its init and running execs whatever the cgroup says; an exec's carries its id
    /// in containerd's `ProcessDetails`, as containerd's runc shim marks them.
    fn processes(&self, id: &str) -> Result<Vec<ProcessInfo>, ShimError> {
        let (init, bundle, execs) = {
            let state = self.lock();
            let container = state.container(id)?;
            if container.exit.is_some() {
                return Ok(Vec::new());
            }
            let execs: HashMap<i32, String> = container
                .execs
                .iter()
                .filter_map(|(exec_id, exec)| match exec.state {
                    ExecState::Running { pid } => Some((pid, exec_id.clone())),
                    _ => None,
                })
                .collect();
            (container.pid, container.bundle.clone(), execs)
        };
        let mut pids: BTreeSet<i32> = container_cgroup(&bundle, init)
            .map(|cgroup| cgroup.processes())
            .unwrap_or_default()
            .into_iter()
            .collect();
        pids.insert(init);
        pids.extend(execs.keys());
        pids.into_iter()
            .map(|pid| {
                let info = execs
                    .get(&pid)
                    .map(|exec_id| {
                        metrics::pack(&ProcessDetails {
                            exec_id: exec_id.clone(),
                            ..ProcessDetails::default()
                        })
                    })
                    .transpose()?;
                Ok(ProcessInfo {
                    pid: pid as u32,
                    info: info.into(),
                    ..ProcessInfo::default()
                })
            })
            .collect()
    }

    /// Containerd's cgroup metrics of container `id`, which must not have stopped (its
    /// cgroup goes with it).
    fn stats_of(&self, id: &str) -> Result<Any, ShimError> {
        let (init, bundle) = {
            let state = self.lock();
            let container = state.container(id)?;
            if container.exit.is_some() {
                return Err(ShimError::FailedPrecondition(format!(
                    "container {id} has stopped: it has no stats"
                )));
            }
            (container.pid, container.bundle.clone())
        };
        let cgroup = container_cgroup(&bundle, init)
            .ok_or_else(|| ShimError::NotFound(format!("the cgroup of container {id}")))?;
        metrics::read_packed(&cgroup)
    }

    /// Waits (bounded) until the output of exec `exec_id`'s terminal has reached its
    /// file, so that whoever saw it exit can read all of it. Output through pipes goes to
    /// the files directly and needs no wait.
    fn drain_exec_output(&self, id: &str, exec_id: &str) {
        let streams = self
            .lock()
            .containers
            .get(id)
            .and_then(|container| container.execs.get(exec_id))
            .and_then(|exec| exec.io.as_ref())
            .map(|io| io.streams.clone());
        if let Some(streams) = streams {
            streams.wait(OUTPUT_DRAIN_TIMEOUT);
        }
    }
}

/// Checks that `exec_id` is an identifier as containerd accepts them (letters and
/// digits, single `.`, `_` or `-` between them): it names files of the exec, so it must
/// never be a path.
pub fn check_exec_id(exec_id: &str) -> Result<(), ShimError> {
    let separated = exec_id
        .split(['.', '_', '-'])
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric()));
    if exec_id.len() > MAX_EXEC_ID || !separated {
        return Err(ShimError::InvalidArgument(format!(
            "exec id {exec_id:?}: want letters and digits, with single '.', '_' or '-' \
             between them, at most {MAX_EXEC_ID} in all"
        )));
    }
    Ok(())
}

/// Whether the spec in `bundle` asks for a new PID namespace. Unreadable, it counts as
/// shared, as containerd counts it: killing leftovers that do not exist costs nothing.
fn owns_pid_namespace(bundle: &Path) -> bool {
    let Some(spec) = read_spec(bundle) else {
        return false;
    };
    spec["linux"]["namespaces"]
        .as_array()
        .is_some_and(|namespaces| {
            namespaces.iter().any(|namespace| {
                namespace["type"] == "pid" && namespace["path"].as_str().is_none_or(str::is_empty)
            })
        })
}

/// Checks what runc cannot report clearly: that `process` is a JSON object with a
/// command to run, and a terminal if and only if the request asks for one. runc checks
/// the rest.
fn check_process(exec_id: &str, process: &[u8], terminal: bool) -> Result<(), ShimError> {
    let invalid = |why: &str| ShimError::InvalidArgument(format!("exec {exec_id}: {why}"));
    let process: serde_json::Value = serde_json::from_slice(process)
        .map_err(|err| invalid(&format!("spec is not an OCI process in JSON: {err}")))?;
    let has_command = process["args"]
        .as_array()
        .is_some_and(|args| !args.is_empty() && args.iter().all(serde_json::Value::is_string));
    if !has_command {
        return Err(invalid("spec.args must be a non-empty list of strings"));
    }
    if (process["terminal"] == true) != terminal {
        return Err(invalid(&format!(
            "spec.terminal must be {terminal}, as the request's terminal is"
        )));
    }
    Ok(())
}

/// Checks that the spec in `bundle` asks for a terminal if and only if the request does,
/// which the runtime would report less clearly.
fn check_spec_terminal(id: &str, bundle: &Path, terminal: bool) -> Result<(), ShimError> {
    let in_spec = read_spec(bundle).is_some_and(|spec| spec["process"]["terminal"] == true);
    if in_spec != terminal {
        return Err(ShimError::InvalidArgument(format!(
            "container {id}: the request's terminal is {terminal} but its spec's \
             process.terminal is {in_spec}"
        )));
    }
    Ok(())
}

/// The OCI spec in `bundle`, as JSON; `None` when it cannot be read.
fn read_spec(bundle: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(bundle.join("config.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The cgroup of the container in `bundle` whose init is `pid`. An absolute
/// `linux.cgroupsPath` is the same path under every hierarchy, as runc's cgroupfs driver
/// places it (crius always writes one); the other forms (none, relative, systemd's
/// `slice:prefix:name`), which runtimes resolve each their own way, are found where the
/// init actually is, as containerd's shim finds every container's.
fn container_cgroup(bundle: &Path, pid: i32) -> Option<Cgroup> {
    let spec = read_spec(bundle);
    match spec
        .as_ref()
        .and_then(|spec| spec["linux"]["cgroupsPath"].as_str())
    {
        Some(path) if path.starts_with('/') => Some(Cgroup::new(path)),
        _ => Cgroup::of_process(pid),
    }
}

/// Sends `signal` to `root` and all its descendants, found through the parent links in
/// `/proc/<pid>/stat` (the container's processes are visible there by their host pids).
///
/// The tree is frozen first: every process found is sent SIGSTOP, and the search repeats
/// until it finds no new one. Without that, a child forked between the search and the
/// signal would escape: once its parent dies it is re-parented to the container's init
/// and no longer linked to `root`. A stopped process does not act on other signals until
/// continued, so SIGCONT follows anything but SIGKILL.
fn signal_tree(root: Pid, signal: Signal) -> Result<(), ShimError> {
    let mut frozen = BTreeSet::new();
    for _ in 0..FREEZE_ROUNDS {
        let found = descendants(root)?;
        let new: Vec<Pid> = found.difference(&frozen).copied().collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            // A process that is gone needs no stopping.
            let _ = kill(pid, Signal::SIGSTOP);
            frozen.insert(pid);
        }
    }
    for &pid in &frozen {
        let _ = kill(pid, signal);
    }
    if signal != Signal::SIGKILL {
        for &pid in &frozen {
            let _ = kill(pid, Signal::SIGCONT);
        }
    }
    Ok(())
}

/// `root` and every process descending from it, from one pass over `/proc`.
fn descendants(root: Pid) -> Result<BTreeSet<Pid>, ShimError> {
    let entries = std::fs::read_dir("/proc").map_err(|source| ShimError::Io {
        what: "list /proc",
        source,
    })?;
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may exit between the listing and the read.
        if let Some(parent) = parent_of(pid) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut tree = BTreeSet::from([root]);
    let mut pending = vec![root.as_raw()];
    while let Some(pid) = pending.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if tree.insert(Pid::from_raw(child)) {
                pending.push(child);
            }
        }
    }
    Ok(tree)
}

/// The parent pid in `/proc/<pid>/stat`: the field after the state, which follows the
/// command name in parentheses (the name itself may hold parentheses and spaces).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

fn timestamp(time: SystemTime) -> Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Timestamp::default()
    }
}

//! `crius-oci`: the embedded OCI runtime, which the default runtime handler runs
//! containers with, so that a node needs no runtime binary besides crius's own.
//!
//! It is youki's `libcontainer` behind the subset of runc's command line that
//! [`super::runc`] uses, so the shim drives it exactly as it drives runc: as a child
//! process whose exit the shim's reaper collects (libcontainer forks and waits for its
//! own helper processes, which must not happen inside the shim, where the reaper would
//! take their exits), and which leaves the containers' processes re-parented to the shim.
//! It is a binary of its own, not a command of `crius-shim`, so that the shims (one per
//! pod, for the pod's whole life) do not map libcontainer and libseccomp.
//!
//! Command line (runc's): the global `--root DIR --log FILE --log-format json`, then
//! `create --bundle DIR --pid-file FILE [--console-socket SOCKET] ID`, `start ID`,
//! `exec --detach --process FILE --pid-file FILE [--console-socket SOCKET] ID`,
//! `kill [--all] ID SIGNAL` and `delete [--force] ID`. A process with a terminal sends
//! its pty master to the console socket, as runc's do (libcontainer does it). A failure
//! is written to the log file as runc writes it, a JSON line `{"level":"error","msg":…}`,
//! which is where [`super::runc`] reads it from.
//!
//! Seccomp: libcontainer installs a container's `linux.seccomp` filter with libseccomp,
//! in the init before it drops capabilities, as runc does, unless the process has
//! `noNewPrivileges` (then last, before the exec). It does not for exec'd processes:
//! libcontainer 0.7 rebuilds their spec without `linux.seccomp`. [`ExecSeccomp`] installs
//! the container's filter for them, just before the exec'd program runs. That late, the
//! process holds only its own capabilities, and installing a filter takes
//! `CAP_SYS_ADMIN` or `noNewPrivileges`; when it has neither, libcontainer is given the
//! process with `CAP_SYS_ADMIN` and `CAP_SETPCAP` added, and [`ExecSeccomp`] drops them
//! again right after the filter is in (as runc does in that case, a profile must then
//! allow `capset` and `prctl`, which every usable profile does). No requested filter is
//! ever left out: a spec with one fails rather than runs without it.
//!
//! Before libcontainer reads a bundle, [`bundle`] rewrites the parts of its spec that
//! libcontainer would get wrong.

mod bundle;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::error::LibcontainerError;
use libcontainer::oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilities, LinuxSeccomp, Process, Spec,
};
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{
    default::get_executor, Executor, ExecutorError, ExecutorValidationError,
};
use nix::fcntl::{Flock, FlockArg};

/// How libcontainer 0.7 names an exec's notify socket (`tenant-notify-<random>.sock`).
const TENANT_NOTIFY_PREFIX: &str = "tenant-notify-";

/// How libcontainer 0.7 names the link to an exec's console socket
/// (`tenant-tty-<random>.sock`).
const TENANT_TTY_PREFIX: &str = "tenant-tty-";

/// Why an embedded runtime command failed; its message is what the shim reports.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("container {id}: cannot {what}: {}", chain(.source))]
    Container {
        id: String,
        what: &'static str,
        // Boxed: libcontainer's error is large, and every result here carries one.
        source: Box<LibcontainerError>,
    },
    /// runc's wording, which the shim recognises when it stops a container that has
    /// exited.
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("invalid container id {0:?}: it must be a file name")]
    InvalidId(String),
    #[error("no signal {0:?}")]
    Signal(String),
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the OCI {what} in {}: {reason}", .path.display())]
    Spec {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// `crius-oci`: runc's global options and one command.
#[derive(Debug, clap::Parser)]
#[command(
    name = "crius-oci",
    version,
    about = "The OCI runtime of crius's default runtime handler (runc's command line); crius-shim runs it"
)]
pub struct OciArgs {
    /// State directory of the containers.
    #[arg(long)]
    pub root: PathBuf,
    /// Where errors go, one JSON line each.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// runc's log format; only `json` is written.
    #[arg(long = "log-format", value_parser = ["json"], default_value = "json")]
    pub _log_format: String,
    #[command(subcommand)]
    pub command: OciCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum OciCommand {
    /// Sets a container up, its init waiting for `start`.
    Create {
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        pid_file: PathBuf,
        /// Where the pty master of a container with a terminal is sent.
        #[arg(long)]
        console_socket: Option<PathBuf>,
        id: String,
    },
    /// Lets a created container's init run its process.
    Start { id: String },
    /// Runs a process in a running container and returns once it runs.
    Exec {
        /// Required: the process is left to the caller, never waited for.
        #[arg(long, required = true)]
        detach: bool,
        /// The OCI process (JSON) to run.
        #[arg(long)]
        process: PathBuf,
        #[arg(long)]
        pid_file: PathBuf,
        /// Where the pty master of a process with a terminal is sent.
        #[arg(long)]
        console_socket: Option<PathBuf>,
        id: String,
    },
    /// Signals the container's init, or with `--all` every process in its cgroup.
    Kill {
        #[arg(long)]
        all: bool,
        id: String,
        /// A number or a name (`KILL`, `SIGKILL`).
        signal: String,
    },
    /// Removes a stopped container's state and cgroup; with `--force` whatever its
    /// state (killing it), and also when it does not exist.
    Delete {
        #[arg(long)]
        force: bool,
        id: String,
    },
}

/// Runs one command; a failure goes to the log file and to stderr.
pub fn main(args: OciArgs) -> ExitCode {
    match run(&args.root, args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = err.to_string();
            if let Some(log) = &args.log {
                let line = serde_json::json!({"level": "error", "msg": message});
                // stderr still carries the message when the log cannot be written.
                let _ = std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(log)
                    .and_then(|mut file| writeln!(file, "{line}"));
            }
            eprintln!("crius-oci: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(root: &Path, command: OciCommand) -> Result<(), EmbeddedError> {
    let lock = ContainerLock::take(root, command.id())?;
    let deleting = matches!(command, OciCommand::Delete { .. });
    let ran = run_locked(root, command);
    if deleting && ran.is_ok() {
        lock.remove();
    }
    ran
}

fn run_locked(root: &Path, command: OciCommand) -> Result<(), EmbeddedError> {
    match command {
        OciCommand::Create {
            bundle,
            pid_file,
            console_socket,
            id,
        } => create(root, &bundle, &pid_file, console_socket, &id),
        OciCommand::Start { id } => {
            let mut container = load(root, &id)?;
            container.start().map_err(failed(&id, "start it"))
        }
        OciCommand::Exec {
            process,
            pid_file,
            console_socket,
            id,
            ..
        } => exec(root, &process, &pid_file, console_socket, &id),
        OciCommand::Kill { all, id, signal } => {
            let signal =
                Signal::try_from(signal.as_str()).map_err(|_| EmbeddedError::Signal(signal))?;
            let mut container = load(root, &id)?;
            match container.kill(signal, all) {
                Err(LibcontainerError::IncorrectStatus(ContainerStatus::Stopped)) => {
                    Err(EmbeddedError::NotRunning(id))
                }
                other => other.map_err(failed(&id, "signal it")),
            }
        }
        OciCommand::Delete { force, id } => {
            if force && !root.join(&id).exists() {
                return Ok(());
            }
            let mut container = load(root, &id)?;
            container.delete(force).map_err(failed(&id, "delete it"))
        }
    }
}

fn create(
    root: &Path,
    bundle: &Path,
    pid_file: &Path,
    console_socket: Option<PathBuf>,
    id: &str,
) -> Result<(), EmbeddedError> {
    let host_v1 = !Path::new(crate::cgroups::CGROUP_ROOT)
        .join("cgroup.controllers")
        .exists();
    bundle::adapt(&bundle.join("config.json"), host_v1, || {
        std::fs::read_to_string(bundle::MOUNT_TABLE)
    })?;
    ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_console_socket(console_socket)
        .validate_id()
        .and_then(|builder| builder.with_root_path(root))
        .and_then(|builder| builder.with_pid_file(Some(pid_file)))
        .and_then(|builder| {
            builder
                .as_init(bundle)
                .with_systemd(false)
                .with_detach(true)
                .build()
        })
        .map(drop)
        .map_err(failed(id, "create it"))
}

/// Runs `process_file` in container `id`, with the container's seccomp filter (see the
/// module header).
///
/// libcontainer leaves each exec's notify socket (`tenant-notify-<random>.sock`), and
/// for one with a terminal a link to its console socket (`tenant-tty-<random>.sock`), in
/// the container's state directory; a container probed by exec every few seconds would
/// collect them by the hundred thousand. Commands on one container take turns
/// ([`ContainerLock`]), so each exec removes those left once its process runs, when no
/// other exec can be using one.
fn exec(
    root: &Path,
    process_file: &Path,
    pid_file: &Path,
    console_socket: Option<PathBuf>,
    id: &str,
) -> Result<(), EmbeddedError> {
    let container = load(root, id)?;
    let ran = exec_in(root, &container, process_file, pid_file, console_socket, id);
    remove_exec_sockets(&root.join(id));
    ran
}

fn exec_in(
    root: &Path,
    container: &Container,
    process_file: &Path,
    pid_file: &Path,
    console_socket: Option<PathBuf>,
    id: &str,
) -> Result<(), EmbeddedError> {
    let spec_file = container.bundle().join("config.json");
    let spec = Spec::load(&spec_file).map_err(|err| EmbeddedError::Spec {
        what: "runtime spec",
        path: spec_file.clone(),
        reason: err.to_string(),
    })?;
    let builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .with_console_socket(console_socket)
        .with_root_path(root)
        .and_then(|builder| builder.with_pid_file(Some(pid_file)))
        .map_err(failed(id, "exec in it"))?;
    let seccomp = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.seccomp().clone());
    let Some(seccomp) = seccomp else {
        return run_tenant(builder, process_file, id);
    };
    let Some((granted, restore)) = grant_filter_capabilities(read_process(process_file)?) else {
        let executor = ExecSeccomp {
            seccomp,
            restore: None,
        };
        return run_tenant(builder.with_executor(executor), process_file, id);
    };
    // The process as libcontainer must see it, in this command's own state (removed
    // below whatever happens).
    let granted_file = root
        .join(id)
        .join(format!("exec-{}.json", std::process::id()));
    let written = serde_json::to_vec(&granted)
        .map_err(std::io::Error::other)
        .and_then(|json| std::fs::write(&granted_file, json))
        .map_err(|source| EmbeddedError::Io {
            what: "write the exec's process",
            path: granted_file.clone(),
            source,
        });
    let executor = ExecSeccomp {
        seccomp,
        restore: Some(restore),
    };
    let ran = written.and_then(|()| run_tenant(builder.with_executor(executor), &granted_file, id));
    let _ = std::fs::remove_file(&granted_file);
    ran
}

/// Removes the exec notify sockets and console socket links libcontainer left in a
/// container's state directory `state`; what cannot be removed stays for the next exec
/// to try.
fn remove_exec_sockets(state: &Path) {
    let Ok(entries) = std::fs::read_dir(state) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let of_exec = [TENANT_NOTIFY_PREFIX, TENANT_TTY_PREFIX]
            .iter()
            .any(|prefix| name.starts_with(prefix));
        if of_exec && name.ends_with(".sock") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Runs the OCI process in `process_file` in container `id` and returns once it runs.
fn run_tenant(
    builder: ContainerBuilder,
    process_file: &Path,
    id: &str,
) -> Result<(), EmbeddedError> {
    builder
        .as_tenant()
        .with_detach(true)
        .with_process(Some(process_file))
        .build()
        .map(drop)
        .map_err(failed(id, "exec in it"))
}

fn read_process(path: &Path) -> Result<Process, EmbeddedError> {
    let json = std::fs::read(path).map_err(|source| EmbeddedError::Io {
        what: "read the process file",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&json).map_err(|err| EmbeddedError::Spec {
        what: "process",
        path: path.to_path_buf(),
        reason: err.to_string(),
    })
}

/// `process` with the capabilities it needs to install a seccomp filter just before its
/// program runs, and its own capabilities to restore after that; `None` when it needs
/// none (see the module header).
fn grant_filter_capabilities(mut process: Process) -> Option<(Process, LinuxCapabilities)> {
    if process.no_new_privileges() == Some(true) {
        return None;
    }
    // Without a capabilities section, libcontainer leaves the process root's.
    let original = process.capabilities().clone()?;
    let has_admin = original
        .effective()
        .as_ref()
        .is_some_and(|effective| effective.contains(&Capability::SysAdmin));
    if has_admin {
        return None;
    }
    let grant = |set: &Option<Capabilities>| {
        let mut set = set.clone().unwrap_or_default();
        set.extend([Capability::SysAdmin, Capability::Setpcap]);
        Some(set)
    };
    let mut granted = original.clone();
    granted
        .set_bounding(grant(original.bounding()))
        .set_effective(grant(original.effective()))
        .set_permitted(grant(original.permitted()));
    process.set_capabilities(Some(granted));
    Some((process, original))
}

/// Runs an exec'd process's program under the container's seccomp filter: libcontainer
/// runs it in the exec'd process, after setting everything else up, to start the program.
#[derive(Clone)]
struct ExecSeccomp {
    seccomp: LinuxSeccomp,
    /// The process's own capabilities, when more were granted to install the filter.
    restore: Option<LinuxCapabilities>,
}

impl Executor for ExecSeccomp {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let notify = libcontainer::seccomp::initialize_seccomp(&self.seccomp)
            .map_err(|err| ExecutorError::Other(format!("cannot install seccomp: {err}")))?;
        if notify.is_some() {
            // Nobody would listen: the process would hang at its first notified call.
            return Err(ExecutorError::Other(
                "seccomp notify actions are not supported".to_string(),
            ));
        }
        if let Some(capabilities) = &self.restore {
            let syscall = SyscallType::default().create_syscall();
            libcontainer::capabilities::drop_privileges(capabilities, syscall.as_ref()).map_err(
                |err| ExecutorError::Other(format!("cannot drop the granted capabilities: {err}")),
            )?;
        }
        get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        get_executor().validate(spec)
    }
}

/// The lock that the commands on one container take turns with, `<root>/<id>.lock`
/// beside its state directory. libcontainer saves a container's `state.json` in place
/// (truncate, then write) where runc replaces it whole, so a command that loads it while
/// another saves it (a kill while the shim kills an exited init's leftovers) read an
/// empty file ("EOF while parsing"), and execs share the state directory's sockets.
struct ContainerLock {
    path: PathBuf,
    _flock: Flock<std::fs::File>,
}

impl ContainerLock {
    /// Waits for and takes the lock of container `id`, creating `root` if needed.
    fn take(root: &Path, id: &str) -> Result<ContainerLock, EmbeddedError> {
        // An id that is not a plain name is refused by libcontainer; its lock must not
        // land anywhere else first.
        let name = Path::new(id)
            .file_name()
            .filter(|name| *name == std::ffi::OsStr::new(id))
            .ok_or_else(|| EmbeddedError::InvalidId(id.to_string()))?;
        let mut file_name = name.to_os_string();
        file_name.push(".lock");
        let path = root.join(file_name);
        let failed = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| EmbeddedError::Io { what, path, source }
        };
        std::fs::create_dir_all(root).map_err(failed("create the state directory", root))?;
        let file = std::fs::File::create(&path).map_err(failed("create the lock", &path))?;
        let flock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| failed("lock", &path)(errno.into()))?;
        Ok(ContainerLock {
            path,
            _flock: flock,
        })
    }

    /// Removes the lock of a deleted container. A command already waiting on it then
    /// finds no container, as it would have after the delete.
    fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl OciCommand {
    /// The container the command is about.
    fn id(&self) -> &str {
        match self {
            OciCommand::Create { id, .. }
            | OciCommand::Start { id }
            | OciCommand::Exec { id, .. }
            | OciCommand::Kill { id, .. }
            | OciCommand::Delete { id, .. } => id,
        }
    }
}

/// The state of container `id` under `root`.
fn load(root: &Path, id: &str) -> Result<Container, EmbeddedError> {
    let state = root.join(id);
    if !state.exists() {
        return Err(EmbeddedError::NotFound(id.to_string()));
    }
    Container::load(state).map_err(failed(id, "load its state"))
}

fn failed(id: &str, what: &'static str) -> impl FnOnce(LibcontainerError) -> EmbeddedError {
    let id = id.to_string();
    move |source| EmbeddedError::Container {
        id,
        what,
        source: Box::new(source),
    }
}

/// `err` and its sources, as one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

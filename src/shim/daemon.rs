//! `crius-shim start`: how a shim comes to life.
//!
//! The shim manager runs `crius-shim start`, which forks the long-lived shim and exits as
//! soon as the shim serves its socket, printing the socket's address (the shim v2 start
//! protocol). The forked shim starts a new session, so it belongs to no terminal and
//! survives criusd; its parent exits, so it is re-parented away from criusd and criusd
//! never has to reap it. A pod with its own PID namespace gets it from the shim, which
//! clones the namespace's init (see [`super::pid_namespace`]) and stops it on its way out.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use containerd_shim_protos::create_task;
use containerd_shim_protos::ttrpc::Server;
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, sethostname, setsid, ForkResult};

use super::pid_namespace::PidNamespaceInit;
use super::reaper::Reaper;
use super::runc::{dev_null, OciRuntime, Runc};
use super::task::TaskService;
use super::ShimError;

/// What a shim needs to know; passed on its command line.
pub struct ShimOptions {
    /// The pod sandbox this shim serves.
    pub id: String,
    /// The shim's own directory: log, runc root, exec output.
    pub dir: PathBuf,
    /// The unix socket it serves on (kept short: socket paths are limited to 107 bytes).
    pub socket: PathBuf,
    /// The OCI runtime of the pod's runtime handler.
    pub runtime: OciRuntime,
    /// Namespaces the shim creates and holds for the pod's containers to join.
    pub namespaces: PodNamespaces,
    /// The pod's hostname, set in its UTS namespace.
    pub hostname: Option<String>,
}

/// Which of the pod's namespaces are its own (the others are the node's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    /// The pod's network namespace, pinned by criusd (which connects it to the pod
    /// network before the shim starts).
    pub network: Option<PathBuf>,
    pub ipc: bool,
    pub uts: bool,
    /// A PID namespace shared by the pod's containers, held by an init the shim clones
    /// (a PID namespace cannot be entered by the shim itself: `unshare` moves only its
    /// future children into one).
    pub pid: bool,
}

/// Forks the shim and returns, in the parent, once it serves (or failed to). The caller
/// prints the address and exits.
pub fn start(options: ShimOptions) -> Result<String, ShimError> {
    if let Some(sockets) = options.socket.parent() {
        std::fs::create_dir_all(sockets).map_err(|source| ShimError::Io {
            what: "create the shim socket directory",
            source,
        })?;
    }
    std::fs::create_dir_all(&options.dir).map_err(|source| ShimError::Io {
        what: "create the shim directory",
        source,
    })?;
    enter_pod_namespaces(&options)?;
    let (mut ready_reader, ready_writer) = std::io::pipe().map_err(|source| ShimError::Io {
        what: "create the readiness pipe",
        source,
    })?;
    // SAFETY: the process is single-threaded here (nothing has spawned a thread yet), so
    // the child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|source| ShimError::Sys {
        what: "fork the shim",
        source,
    })? {
        ForkResult::Parent { .. } => {
            drop(ready_writer);
            let mut answer = String::new();
            let _ = ready_reader.read_to_string(&mut answer);
            match answer.strip_prefix("ok ") {
                Some(address) => Ok(address.to_string()),
                None => Err(ShimError::FailedPrecondition(format!(
                    "the shim did not start: {}",
                    if answer.is_empty() {
                        "it exited"
                    } else {
                        &answer
                    }
                ))),
            }
        }
        ForkResult::Child => {
            drop(ready_reader);
            let code = match serve(&options, ready_writer) {
                Ok(()) => 0,
                Err(err) => {
                    eprintln!("crius-shim {}: {err}", options.id);
                    1
                }
            };
            std::process::exit(code);
        }
    }
}

/// Enters the pod's network namespace and creates its other own namespaces in this
/// (still single-threaded, short-lived) start process, so that the forked shim lives in
/// them and holds them for the pod, the way a pause container would: containers join
/// `/proc/<shim pid>/ns/*`.
fn enter_pod_namespaces(options: &ShimOptions) -> Result<(), ShimError> {
    let wanted = &options.namespaces;
    if let Some(netns) = &wanted.network {
        let namespace = File::open(netns).map_err(|source| ShimError::Io {
            what: "open the pod's network namespace",
            source,
        })?;
        setns(namespace, CloneFlags::CLONE_NEWNET).map_err(|source| ShimError::Sys {
            what: "enter the pod's network namespace",
            source,
        })?;
    }
    let mut flags = CloneFlags::empty();
    flags.set(CloneFlags::CLONE_NEWIPC, wanted.ipc);
    flags.set(CloneFlags::CLONE_NEWUTS, wanted.uts);
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags).map_err(|source| ShimError::Sys {
        what: "create the pod's namespaces",
        source,
    })?;
    if let (true, Some(hostname)) = (wanted.uts, &options.hostname) {
        sethostname(hostname).map_err(|source| ShimError::Sys {
            what: "set the pod's hostname",
            source,
        })?;
    }
    Ok(())
}

/// The shim's life: detach, serve the Task service until `shutdown`, clean up.
fn serve(options: &ShimOptions, mut ready: std::io::PipeWriter) -> Result<(), ShimError> {
    let sys = |what| move |source| ShimError::Sys { what, source };
    setsid().map_err(sys("start a new session"))?;
    let log = File::options()
        .create(true)
        .append(true)
        .open(options.dir.join("shim.log"))
        .map_err(|source| ShimError::Io {
            what: "open the shim log",
            source,
        })?;
    dup2_stdin(dev_null()?.as_fd()).map_err(sys("redirect stdin"))?;
    dup2_stdout(log.as_fd()).map_err(sys("redirect stdout"))?;
    dup2_stderr(log.as_fd()).map_err(sys("redirect stderr"))?;

    // Cloned while the shim is still single-threaded, as the init needs.
    let pid_namespace = if options.namespaces.pid {
        Some(PidNamespaceInit::start(&options.dir)?)
    } else {
        None
    };
    // Before any thread: the reaper blocks SIGCHLD for every thread spawned after it.
    let reaper = Reaper::start()?;
    let (shutdown_sender, shutdown) = mpsc::channel();
    // The shim's own executable, also after an upgrade replaced the file: the embedded
    // runtime stays the version of the shim that runs the pod.
    let runc = Runc::new(
        &options.runtime,
        Path::new("/proc/self/exe"),
        &options.dir.join("runc"),
    );
    let service = TaskService::new(
        runc,
        reaper.clone(),
        shutdown_sender,
        pid_namespace.as_ref().map(PidNamespaceInit::pid),
    );
    let socket = &options.socket;
    let _ = std::fs::remove_file(socket);
    let address = format!("unix://{}", socket.display());
    let rpc = |source| ShimError::Rpc {
        socket: address.clone(),
        source,
    };
    let mut server = Server::new()
        .bind(&address)
        .map_err(rpc)?
        .register_service(create_task(service))
        // Idle threads cost memory; every blocked Wait holds one, so the ceiling is high.
        .set_thread_count_default(2)
        .set_thread_count_min(1)
        .set_thread_count_max(32);
    server.start().map_err(rpc)?;
    let _ = write!(ready, "ok {address}");
    drop(ready);
    let _ = shutdown.recv();
    server.shutdown();
    if let Some(init) = pid_namespace {
        init.stop(&reaper);
    }
    let _ = std::fs::remove_file(socket);
    Ok(())
}

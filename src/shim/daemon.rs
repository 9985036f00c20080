//! `crius-shim … start`: how a shim comes to life, and `… delete`: what is done for a
//! dead one.
//!
//! The shim manager (criusd's, or containerd) runs `crius-shim … start` (see
//! [`super::command_line`]) in the shim's working directory. It forks the long-lived shim
//! and exits as soon as the shim serves its socket, printing the socket's address (the
//! shim v2 start protocol: a bare address means Task API v2, and the shim serves both v2
//! and v3, see [`super::task_api`]). If a live shim already serves that socket (a pod's
//! containers share their sandbox's shim), it prints that shim's address instead, as
//! containerd-shim-runc-v2 does. The forked shim starts a new session, so it belongs to
//! no terminal and survives criusd; its parent exits, so it is re-parented away from
//! criusd and criusd never has to reap it. A pod with its own PID namespace gets it from
//! the shim, which clones the namespace's init (see [`super::pid_namespace`]) and stops
//! it on its way out.
//!
//! The shim publishes task events to the address it was given (see [`super::events`])
//! and holds the `log` FIFO of its working directory, if its manager made one, for its
//! whole life: containerd (and criusd) read shim logs from there and see the shim gone
//! when the FIFO's last writer closes. Its own log stays in `shim.log`, so that a
//! manager that stopped reading can never block it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use containerd_shim_protos::create_task;
use containerd_shim_protos::ttrpc::Server;
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fork, sethostname, setsid, ForkResult};

use super::events::EventPublisher;
use super::pid_namespace::PidNamespaceInit;
use super::reaper::Reaper;
use super::removed;
use super::resident::{IdleTrimmer, IDLE_INTERVAL};
use super::runc::{dev_null, OciRuntime, Runc};
use super::task::TaskService;
use super::task_api::serve_both;
use super::ShimError;

/// How long a shim on its way out waits for its last events to be forwarded.
const EVENT_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where containerd's shims put their sockets (containerd's state dir `/run/containerd`,
/// then `s`); crius-shim's default when no `-socket` is given.
pub const DEFAULT_SOCKET_DIR: &str = "/run/containerd/s";

/// What a shim needs to know; passed on its command line.
pub struct ShimOptions {
    /// The pod sandbox this shim serves (containerd: the first container of its group).
    pub id: String,
    /// The shim's own directory, its working directory: log, runc root, exec output.
    pub dir: PathBuf,
    /// containerd's namespace of its tasks, in every event it publishes.
    pub namespace: String,
    /// The ttrpc address events are published to; none: events are not published.
    pub events: Option<String>,
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
/// prints the address and exits. A live shim on the socket already is the answer.
pub fn start(options: ShimOptions) -> Result<String, ShimError> {
    if std::os::unix::net::UnixStream::connect(&options.socket).is_ok() {
        return Ok(format!("unix://{}", options.socket.display()));
    }
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
    let events = EventPublisher::start(options.events.as_deref(), &options.namespace)?;
    let manager_log = open_manager_log(&options.dir);
    let (shutdown_sender, shutdown) = mpsc::channel();
    let runc = Runc::new(&options.runtime, &options.dir.join("runc"));
    let service = TaskService::new(
        runc,
        reaper.clone(),
        shutdown_sender,
        pid_namespace.as_ref().map(PidNamespaceInit::pid),
        events.clone(),
    );
    let attach_socket = attach_socket_of(&options.socket);
    let _ = std::fs::remove_file(&attach_socket);
    let attach = UnixListener::bind(&attach_socket).map_err(|source| ShimError::Io {
        what: "listen for attach clients",
        source,
    })?;
    let attaching = service.clone();
    std::thread::Builder::new()
        .name("attach".into())
        .spawn(move || serve_attach(attach, &attaching))
        .map_err(|source| ShimError::Io {
            what: "start the attach listener",
            source,
        })?;
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
        .register_service(serve_both(|| create_task(service.clone())))
        // Idle threads cost memory; every blocked Wait holds one, so the ceiling is high.
        .set_thread_count_default(2)
        .set_thread_count_min(1)
        .set_thread_count_max(32);
    server.start().map_err(rpc)?;
    let _ = write!(ready, "ok {address}");
    drop(ready);
    note(
        &manager_log,
        &format!("crius-shim {} serving on {address}", options.id),
    );
    let mut trimmer = IdleTrimmer::default();
    while let Err(mpsc::RecvTimeoutError::Timeout) = shutdown.recv_timeout(IDLE_INTERVAL) {
        trimmer.tick();
    }
    server.shutdown();
    events.flush(EVENT_FLUSH_TIMEOUT);
    if let Some(init) = pid_namespace {
        init.stop(&reaper);
    }
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(attach_socket);
    Ok(())
}

/// The socket where attach clients get a container's output from the shim serving on
/// `shim_socket`: beside it, named after it (`<socket>.attach`; short, for the 107 bytes
/// a unix socket path may take). A client sends the container's id and a newline, then
/// reads its output as [`super::cri_log`] frames it, until the connection closes at the
/// output's end.
pub fn attach_socket_of(shim_socket: &Path) -> PathBuf {
    let mut path = shim_socket.as_os_str().to_os_string();
    path.push(".attach");
    PathBuf::from(path)
}

/// The most an attach client's request (a container id and a newline) may take.
const ATTACH_REQUEST_MAX: usize = 256;

/// Hands each attach client the output of the container it names.
fn serve_attach(listener: UnixListener, service: &TaskService) {
    for connection in listener.incoming() {
        let Ok(mut client) = connection else {
            continue;
        };
        // Only criusd (root, the shim's directory) connects; still, a client that says
        // nothing must not hold the listener for long.
        let _ = client.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let mut id = Vec::new();
        let mut byte = [0u8; 1];
        while id.len() < ATTACH_REQUEST_MAX {
            match client.read(&mut byte) {
                Ok(1) if byte[0] != b'\n' => id.push(byte[0]),
                _ => break,
            }
        }
        if let Ok(id) = String::from_utf8(id) {
            // An unknown container: the client's connection closes, which says so.
            let _ = service.attach_output(&id, client);
        }
    }
}

/// The socket a shim serves on when not told: containerd-shim-runc-v2's choice,
/// `/run/containerd/s/<sha256 of address/namespace/group>` (containerd
/// `runtime/v2/shim/util_unix.go` `SocketAddress`), so that the containers of one group
/// find their shim there.
pub fn default_socket(address: &str, namespace: &str, group: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    // Go's filepath.Join: empty parts are skipped.
    let joined = [address, namespace, group]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    Path::new(DEFAULT_SOCKET_DIR).join(hex::encode(Sha256::digest(joined.as_bytes())))
}

/// The group of the shim started for task `id` in the bundle `dir`: the
/// `io.containerd.runc.v2.group` or `io.kubernetes.cri.sandbox-id` annotation of its
/// `config.json` (containerd-shim-runc-v2's `groupLabels`, in that order), else `id`.
pub fn group_of(dir: &Path, id: &str) -> String {
    let spec = std::fs::read(dir.join("config.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    [
        "io.containerd.runc.v2.group",
        "io.kubernetes.cri.sandbox-id",
    ]
    .iter()
    .find_map(|label| {
        spec.as_ref()?["annotations"][label]
            .as_str()
            .map(str::to_string)
    })
    .unwrap_or_else(|| id.to_string())
}

/// The `log` FIFO its manager reads shim logs from, opened for writing without ever
/// blocking; none if there is no FIFO (or no reader).
fn open_manager_log(dir: &Path) -> Option<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let path = dir.join("log");
    let is_fifo = std::fs::metadata(&path).is_ok_and(|meta| meta.file_type().is_fifo());
    if !is_fifo {
        return None;
    }
    File::options()
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .ok()
}

/// Writes a line to the manager's log, if it is there and has room.
fn note(log: &Option<File>, line: &str) {
    if let Some(mut log) = log.as_ref() {
        let _ = writeln!(log, "{line}");
    }
}

/// containerd's `delete` action for a shim that is gone: deletes container `id` from the
/// shim's OCI runtime (its state under `dir/runc`), whatever state it is in, removes the
/// dead shim's `socket` if nothing serves it any more, and answers the DeleteResponse
/// containerd expects on stdout (a killed process's status, as containerd-shim-runc-v2
/// answers). Deleting what is gone succeeds.
pub fn delete(
    dir: &Path,
    id: &str,
    runtime: &OciRuntime,
    socket: &Path,
) -> Result<Vec<u8>, ShimError> {
    use containerd_shim_protos::api::DeleteResponse;
    use containerd_shim_protos::protobuf::{Message, MessageField};
    let root = dir.join("runc");
    if root.join(id).exists() {
        let output = std::process::Command::new(runtime.program())
            .arg("--root")
            .arg(&root)
            .args(["delete", "--force", id])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| ShimError::Io {
                what: "run the OCI runtime",
                source,
            })?;
        if !output.status.success() && root.join(id).exists() {
            return Err(ShimError::Runtime {
                command: "delete",
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
    }
    let served = std::os::unix::net::UnixStream::connect(socket).is_ok();
    if !served {
        removed(
            std::fs::remove_file(socket),
            "remove the dead shim's socket",
        )?;
    }
    let response = DeleteResponse {
        exit_status: 128 + nix::libc::SIGKILL as u32,
        exited_at: MessageField::some(super::events::timestamp(std::time::SystemTime::now())),
        ..DeleteResponse::default()
    };
    response.write_to_bytes().map_err(|err| {
        ShimError::InvalidArgument(format!("cannot encode the delete response: {err}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sockets_follow_containerds_scheme() {
        // sha256("/run/containerd/containerd.sock/k8s.io/abc")
        let socket = default_socket("/run/containerd/containerd.sock", "k8s.io", "abc");
        assert_eq!(socket.parent(), Some(Path::new(DEFAULT_SOCKET_DIR)));
        use sha2::{Digest, Sha256};
        let expected = hex::encode(Sha256::digest(
            b"/run/containerd/containerd.sock/k8s.io/abc",
        ));
        assert_eq!(
            socket.file_name().unwrap().to_str(),
            Some(expected.as_str())
        );
    }

    #[test]
    fn the_group_comes_from_the_bundles_annotations() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(group_of(dir.path(), "c1"), "c1");
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(group_of(dir.path(), "c1"), "pod1");
    }
}

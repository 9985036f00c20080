//! containerd's shim v2 protocol both ways, end to end. crius's shim manager drives
//! Debian's containerd-shim-runc-v2 (containerd 1.6) the way containerd would: start
//! protocol, Task API v2 with the namespace header, runtime options with a runc root of
//! the test's own, a `file://` log, ExecSync, a reconnect, kill, wait, delete, shutdown.
//! crius-shim, started with exactly containerd's command line in a bundle, goes through
//! the same steps. Both publish the same task events to the manager's events socket, and
//! both leave nothing behind: no process, no socket under /run/containerd/s, no runc
//! state, no mount. A dead crius-shim's container is cleaned up by its `delete` action.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::bundles::{busybox_bundle, RUNC};
use common::processes_mentioning;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use crius::shim::events::{ReceivedEvent, TaskEvent};
use crius::shim::launcher::ShimCommand;
use crius::shim::manager::{ExecOutput, Shim, ShimManager, TaskStatus};
use crius::shim::stdio_uri::file_uri;
use crius::shim::task_api::TaskApiVersion;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const RUNC_V2: &str = "/usr/bin/containerd-shim-runc-v2";

/// Where containerd's shims (and crius-shim, by default) put their sockets.
const SOCKET_DIR: &str = "/run/containerd/s";

/// How long an event may take to arrive, a shim to exit.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A name no other test of this run uses: containerd namespaces name runc roots and
/// socket hashes, container ids name cgroups.
fn unique(name: &str) -> String {
    format!("crius-test-{name}-{}", common::unique_number())
}

/// containerd-shim-runc-v2's runtime options (`containerd.runc.v1.Options`) with runc's
/// state under `root` instead of /run/containerd/runc.
fn runc_options(root: &Path) -> Any {
    let options = Options {
        root: root.display().to_string(),
        ..Options::default()
    };
    Any {
        type_url: "containerd.runc.v1.Options".to_string(),
        value: options.write_to_bytes().unwrap(),
        ..Any::default()
    }
}

/// The shim binaries under test, and what differs between them.
struct Flavour {
    binary: PathBuf,
    /// Where the shim keeps runc's state for the test's namespace.
    runc_state: fn(bundle: &Path, runc_root: &Path, namespace: &str) -> PathBuf,
    options: fn(runc_root: &Path) -> Option<Any>,
    /// Whether the log holds the line `hello` (raw, or in the CRI format).
    logged_hello: fn(log: &str) -> bool,
}

fn runc_v2() -> Flavour {
    Flavour {
        binary: PathBuf::from(RUNC_V2),
        // runc --root <options.root>/<namespace>
        runc_state: |_, root, namespace| root.join(namespace),
        options: |root| Some(runc_options(root)),
        logged_hello: |log| log.lines().any(|line| line == "hello"),
    }
}

fn crius_shim() -> Flavour {
    Flavour {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_crius-shim")),
        // Its working directory's `runc`.
        runc_state: |bundle, _, _| bundle.join("runc"),
        options: |_| None,
        logged_hello: |log| log.lines().any(|line| line.ends_with(" stdout F hello")),
    }
}

#[test]
fn containerd_shim_runc_v2_runs_a_container_through_the_shim_manager() {
    container_lifecycle(runc_v2());
}

#[test]
fn crius_shim_started_the_containerd_way_runs_the_same_lifecycle() {
    container_lifecycle(crius_shim());
}

/// Everything a test started, removed whatever happens (a failed test must not leave
/// a shim or runc state on the host); checked to be gone already when the test passes.
struct Cleanup {
    dir: tempfile::TempDir,
    namespace: String,
    shim_pid: Option<u32>,
    socket: Option<PathBuf>,
    runc_state: Option<PathBuf>,
}

impl Cleanup {
    fn new(name: &str) -> Cleanup {
        Cleanup {
            dir: tempfile::Builder::new()
                .prefix("crius-shim-v2-")
                .tempdir()
                .unwrap(),
            namespace: unique(name),
            shim_pid: None,
            socket: None,
            runc_state: None,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A shim manager with its state under this test's directory, in its namespace.
    fn shim_manager(&self) -> ShimManager {
        ShimManager::new(
            Path::new(env!("CARGO_BIN_EXE_crius-shim")),
            &self.path().join("state"),
        )
        .unwrap()
        .with_namespace(&self.namespace)
    }

    /// Asserts that nothing the test started is left.
    fn assert_nothing_left(&self) {
        if let Some(pid) = self.shim_pid {
            let deadline = Instant::now() + TIMEOUT;
            while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
                assert!(
                    Instant::now() < deadline,
                    "the shim (pid {pid}) did not exit"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(socket) = &self.socket {
            assert!(!socket.exists(), "socket {} left behind", socket.display());
        }
        if let Some(state) = &self.runc_state {
            let left: Vec<_> = std::fs::read_dir(state)
                .map(|dir| dir.flatten().map(|entry| entry.path()).collect())
                .unwrap_or_default();
            assert!(left.is_empty(), "runc state left: {left:?}");
        }
        let default_root = Path::new("/run/containerd/runc").join(&self.namespace);
        assert!(
            !default_root.exists(),
            "{} was used",
            default_root.display()
        );
        let needle = self.path().display().to_string();
        assert!(
            processes_mentioning(&needle).is_empty(),
            "processes left: {:?}",
            processes_mentioning(&needle)
        );
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts: Vec<_> = mountinfo
            .lines()
            .filter(|line| {
                line.split(' ')
                    .nth(4)
                    .is_some_and(|p| p.starts_with(&needle))
            })
            .collect();
        assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Only what a failed test left: each step is a no-op for what is gone.
        if let Some(state) = &self.runc_state {
            common::force_delete_containers(RUNC, state);
        }
        if let Some(pid) = self.shim_pid {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
        let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(&self.namespace));
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            == Some("Z")
    })
}

/// The container's process spec with `args`, as CRI's ExecSync sends it.
fn process(bundle: &Path, args: &[&str]) -> Vec<u8> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let mut process = spec["process"].clone();
    process["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
    process.to_string().into_bytes()
}

fn container_lifecycle(flavour: Flavour) {
    let mut cleanup = Cleanup::new("lifecycle");
    let dir = cleanup.path().to_path_buf();
    let manager = cleanup.shim_manager();
    let events = manager.events().subscribe();
    let runc_root = dir.join("runc-root");
    let bundle = busybox_bundle(&dir, &["sh", "-c", "echo hello; exec sleep 1000"]);
    let id = unique("c");
    cleanup.runc_state = Some((flavour.runc_state)(
        &bundle,
        &runc_root,
        &cleanup.namespace,
    ));
    let command = ShimCommand {
        binary: flavour.binary.clone(),
        id: id.clone(),
        work_dir: bundle.clone(),
        extra_args: Vec::new(),
        options: (flavour.options)(&runc_root),
    };

    let shim = manager.start_shim(&command).unwrap();
    let socket = PathBuf::from(shim.address().strip_prefix("unix://").unwrap());
    cleanup.socket = Some(socket.clone());
    assert_eq!(
        socket.parent(),
        Some(Path::new(SOCKET_DIR)),
        "containerd's socket scheme"
    );
    // A bare address from `start`: the v2 Task API, with the namespace header.
    assert_eq!(shim.api_version(), TaskApiVersion::V2);
    let shim_pid = shim.pids().unwrap().shim;
    cleanup.shim_pid = Some(shim_pid);
    assert_ne!(shim_pid, std::process::id());

    let log = dir.join("logs/c.log");
    let pid = shim.create(&id, &bundle, &log).unwrap();
    assert!(pid > 0);
    assert_eq!(shim.state(&id).unwrap().status, TaskStatus::Created);
    assert_eq!(shim.start(&id).unwrap(), pid);
    assert_eq!(shim.state(&id).unwrap().status, TaskStatus::Running);
    let deadline = Instant::now() + TIMEOUT;
    while !(flavour.logged_hello)(&std::fs::read_to_string(&log).unwrap_or_default()) {
        assert!(Instant::now() < deadline, "no hello in {}", log.display());
        std::thread::sleep(Duration::from_millis(20));
    }

    let output = shim
        .exec_sync(
            &id,
            "exec-1",
            &process(&bundle, &["sh", "-c", "echo out; echo err >&2; exit 3"]),
            Some(TIMEOUT),
            1024,
        )
        .unwrap();
    assert_eq!(
        output,
        ExecOutput {
            exit_code: 3,
            stdout: b"out\n".to_vec(),
            stderr: b"err\n".to_vec(),
            timed_out: false,
        }
    );

    // A new connection (criusd restarted) finds the shim from its bootstrap.
    drop(shim);
    let shim = manager
        .connect_shim(&bundle, (flavour.options)(&runc_root))
        .unwrap();
    assert_eq!(shim.state(&id).unwrap().status, TaskStatus::Running);

    shim.kill(&id, 9, false).unwrap();
    let exit = shim.wait(&id, TIMEOUT).unwrap().expect("exited");
    assert_eq!(exit.code, 137);
    let state = shim.state(&id).unwrap();
    assert_eq!(
        (state.status, state.exit.map(|exit| exit.code)),
        (TaskStatus::Stopped, Some(137))
    );
    assert_eq!(shim.delete(&id).unwrap().map(|exit| exit.code), Some(137));

    let received = events_until_delete(&events, &id);
    assert_lifecycle(&received, &id, "exec-1", pid, &file_uri(&log));
    assert_eq!(
        manager.events().task(&id).unwrap().last.topic,
        "/tasks/delete"
    );
    assert!(received
        .iter()
        .all(|event| event.namespace == cleanup.namespace));

    shim.shutdown(false).unwrap();
    cleanup.assert_nothing_left();
}

/// The events of container `id`, up to its TaskDelete.
fn events_until_delete(events: &Receiver<ReceivedEvent>, id: &str) -> Vec<ReceivedEvent> {
    let deadline = Instant::now() + TIMEOUT;
    let mut received = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no TaskDelete for {id}; got {received:#?}"));
        if event.event.container_id() != Some(id) {
            continue;
        }
        let deleted = matches!(event.event, TaskEvent::Delete { .. });
        received.push(event);
        if deleted {
            return received;
        }
    }
}

/// Asserts containerd's events for a container with init `pid` that ran `exec_id` (exit
/// 3) and was killed: each event once, a process's events in order.
fn assert_lifecycle(received: &[ReceivedEvent], id: &str, exec_id: &str, pid: u32, log: &str) {
    let position = |wanted: &dyn Fn(&TaskEvent) -> bool| {
        let found: Vec<usize> = received
            .iter()
            .enumerate()
            .filter(|(_, event)| wanted(&event.event))
            .map(|(at, _)| at)
            .collect();
        assert_eq!(found.len(), 1, "one such event in {received:#?}");
        found[0]
    };
    let create = position(&|event| {
        matches!(event, TaskEvent::Create { pid: p, io, bundle, .. }
            if *p == pid && io.stdout == log && !bundle.is_empty())
    });
    let start = position(&|event| matches!(event, TaskEvent::Start { pid: p, .. } if *p == pid));
    let added =
        position(&|event| matches!(event, TaskEvent::ExecAdded { exec_id: e, .. } if e == exec_id));
    let started = position(
        &|event| matches!(event, TaskEvent::ExecStarted { exec_id: e, pid, .. } if e == exec_id && *pid > 0),
    );
    let exec_exit = position(
        &|event| matches!(event, TaskEvent::Exit { id: e, exit_status: 3, .. } if e == exec_id),
    );
    let init_exit = position(
        &|event| matches!(event, TaskEvent::Exit { id: e, pid: p, exit_status: 137, .. } if e == id && *p == pid),
    );
    let delete = position(
        &|event| matches!(event, TaskEvent::Delete { pid: p, exit_status: 137, .. } if *p == pid),
    );
    assert!(
        create < start && start < added && added < started && added < exec_exit,
        "out of order: {received:#?}"
    );
    assert!(
        exec_exit < init_exit && init_exit < delete,
        "out of order: {received:#?}"
    );
    assert_eq!(received.len(), 7, "{received:#?}");
}

#[test]
fn a_dead_crius_shims_container_is_cleaned_up_by_its_delete_action() {
    let mut cleanup = Cleanup::new("delete");
    let dir = cleanup.path().to_path_buf();
    let manager = cleanup.shim_manager();
    let bundle = busybox_bundle(&dir, &["sleep", "1000"]);
    let id = unique("c");
    cleanup.runc_state = Some(bundle.join("runc"));
    let command = ShimCommand {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_crius-shim")),
        id: id.clone(),
        work_dir: bundle.clone(),
        extra_args: Vec::new(),
        options: None,
    };
    let shim: Shim = manager.start_shim(&command).unwrap();
    let socket = PathBuf::from(shim.address().strip_prefix("unix://").unwrap());
    cleanup.socket = Some(socket.clone());
    let shim_pid = shim.pids().unwrap().shim;
    cleanup.shim_pid = Some(shim_pid);
    let pid = shim.create(&id, &bundle, &dir.join("c.log")).unwrap();
    shim.start(&id).unwrap();
    drop(shim);

    // The shim dies with its container running: only `delete` can clean up now.
    kill(Pid::from_raw(shim_pid as i32), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while Path::new(&format!("/proc/{shim_pid}")).exists() && !is_zombie(shim_pid) {
        assert!(Instant::now() < deadline, "the shim outlived SIGKILL");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container outlives its shim"
    );
    let exit = manager.delete_task(&command, &bundle).unwrap();
    assert_eq!(exit.code, 137);
    let deadline = Instant::now() + TIMEOUT;
    while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        assert!(
            Instant::now() < deadline,
            "delete left the container running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!socket.exists(), "delete left the dead shim's socket");
    // A second delete finds nothing to do.
    assert_eq!(manager.delete_task(&command, &bundle).unwrap().code, 137);
    cleanup.assert_nothing_left();
}

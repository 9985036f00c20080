//! crius-shim driven through the shim manager, running real containers through runc's
//! command line, each test once with the embedded runtime (`crius-oci`) and once
//! with Debian's runc: the shim v2 Task lifecycle, exit codes, CRI-format logs,
//! reconnecting after the client goes away, and a shim that leaves nothing behind when it
//! shuts down; ExecSync's exec'd processes: exit codes, raw output and its cap, and a
//! timeout that kills the exec's whole process tree but not the container; the init
//! holding a pod's PID namespace, which ends with its shim and takes the pod's processes
//! with it; terminals (output in the log or the exec's file, window size), stdin fed from
//! a FIFO and closed by CloseIO, Pids and Stats.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::bundles::busybox_bundle as bundle;
use common::{processes_mentioning, unique_number};
use crius::shim::console::DIR_PREFIX;
use crius::shim::daemon::PodNamespaces;
use crius::shim::manager::{
    ExecOutput, ExecOutputFiles, Shim, ShimManager, TaskIo, TaskProcess, TaskStatus,
};
use crius::shim::metrics::TaskMetrics;
use crius::shim::runc::OciRuntime;
use crius::shim::ShimError;

const RUNC: &str = "/usr/sbin/runc";

/// Defines, for each test body `name` (a function taking the OCI runtime), a module
/// `name` with one test per runtime: `embedded` and `runc`.
macro_rules! on_each_runtime {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;

            #[test]
            fn embedded() {
                super::$name(OciRuntime::Embedded)
            }

            #[test]
            fn runc() {
                super::$name(OciRuntime::Binary(PathBuf::from(RUNC)))
            }
        }
    )*};
}

on_each_runtime!(
    containers_run_exit_and_log_through_the_shim,
    a_failing_create_reports_the_runtimes_error,
    exec_sync_returns_exit_code_and_output,
    exec_sync_timeout_kills_the_whole_exec_tree_and_spares_the_container,
    a_terminal_containers_output_lands_in_its_log,
    an_exec_with_a_terminal_reads_its_stdin_and_sees_its_new_size,
    stdin_from_a_fifo_reaches_the_container_until_close_io,
    pids_list_the_init_and_execs_by_exec_id,
    stats_are_containerds_cgroup_metrics,
    commands_on_one_container_at_the_same_time_all_succeed,
);

fn shim_manager(dir: &Path) -> ShimManager {
    ShimManager::new(Path::new(env!("CARGO_BIN_EXE_crius-shim")), dir).unwrap()
}

fn unique(name: &str) -> String {
    format!("{name}-{}", unique_number())
}

fn containers_run_exit_and_log_through_the_shim(runtime: OciRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let manager = shim_manager(dir.path());
    let pod = unique("pod");
    let shim = manager
        .start(&pod, &runtime, PodNamespaces::default(), None)
        .unwrap();
    let shim_dir = manager.shim_dir(&pod);
    // The shim's command line names its pod (`-id`) and socket.
    let shim_processes = processes_mentioning(&pod);
    assert_eq!(
        shim_processes.len(),
        1,
        "one shim process: {shim_processes:?}"
    );
    let shim_pid: i32 = shim_processes[0]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(shim.pids().unwrap().shim, shim_pid as u32);
    let stat = std::fs::read_to_string(format!("/proc/{shim_pid}/stat")).unwrap();
    let parent: u32 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(
        parent,
        std::process::id(),
        "the shim must not be our child: it outlives its starter"
    );

    // A container that writes to both streams and exits 0.
    let echo = unique("echo");
    let log = dir.path().join("logs/echo.log");
    let pid = shim
        .create(
            &echo,
            &bundle(dir.path(), &["sh", "-c", "echo hello; echo oops >&2"]),
            &log,
        )
        .unwrap();
    assert!(pid > 0);
    assert_eq!(shim.state(&echo).unwrap().status, TaskStatus::Created);
    shim.start(&echo).unwrap();
    let exit = shim
        .wait(&echo, Duration::from_secs(20))
        .unwrap()
        .expect("exited");
    assert_eq!(exit.code, 0);
    let state = shim.state(&echo).unwrap();
    assert_eq!(state.status, TaskStatus::Stopped);
    assert_eq!(state.exit.unwrap().code, 0);
    shim.delete(&echo).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().any(|l| l.ends_with(" stdout F hello")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.ends_with(" stderr F oops")),
        "{text}"
    );
    assert!(matches!(shim.state(&echo), Err(ShimError::NotFound(_))));

    // Exit codes and signals as kubelet reads them.
    let three = unique("three");
    shim.create(
        &three,
        &bundle(dir.path(), &["sh", "-c", "exit 3"]),
        &dir.path().join("logs/three.log"),
    )
    .unwrap();
    shim.start(&three).unwrap();
    assert_eq!(
        shim.wait(&three, Duration::from_secs(20))
            .unwrap()
            .unwrap()
            .code,
        3
    );
    let sleeper = unique("sleeper");
    shim.create(
        &sleeper,
        &bundle(dir.path(), &["sleep", "1000"]),
        &dir.path().join("logs/sleep.log"),
    )
    .unwrap();
    shim.start(&sleeper).unwrap();
    assert_eq!(
        shim.wait(&sleeper, Duration::from_millis(300)).unwrap(),
        None,
        "sleep must still run"
    );
    assert_eq!(shim.state(&sleeper).unwrap().status, TaskStatus::Running);
    assert!(
        matches!(shim.delete(&sleeper), Err(ShimError::FailedPrecondition(_))),
        "a running container is not deleted"
    );
    shim.kill(&sleeper, 9, false).unwrap();
    assert_eq!(
        shim.wait(&sleeper, Duration::from_secs(20))
            .unwrap()
            .unwrap()
            .code,
        137
    );
    shim.kill(&sleeper, 9, false).unwrap();

    // A new connection (criusd restarted) sees the same state.
    drop(shim);
    let shim = manager.connect(&pod).unwrap();
    assert_eq!(shim.state(&three).unwrap().exit.unwrap().code, 3);
    assert!(
        matches!(shim.shutdown(false), Err(ShimError::FailedPrecondition(_))),
        "shim with containers must stay"
    );
    shim.delete(&three).unwrap();
    shim.delete(&sleeper).unwrap();
    shim.shutdown(false).unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{shim_pid}")).exists() {
        assert!(std::time::Instant::now() < deadline, "shim did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !manager.socket(&pod).unwrap().exists(),
        "socket left behind"
    );
    assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());
    let runc_state: Vec<_> = std::fs::read_dir(shim_dir.join("runc"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(runc_state.is_empty(), "runc state left: {runc_state:?}");
}

fn a_failing_create_reports_the_runtimes_error(runtime: OciRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let manager = shim_manager(dir.path());
    let pod = unique("badpod");
    let shim = manager
        .start(&pod, &runtime, PodNamespaces::default(), None)
        .unwrap();
    let bundle = bundle(dir.path(), &["/no/such/binary"]);
    std::fs::remove_dir_all(bundle.join("rootfs/bin")).unwrap();
    let id = unique("broken");
    let err = shim.create(&id, &bundle, &dir.path().join("broken.log"));
    let err = match err {
        // runc create may succeed (the exec happens at start) or fail; either way start fails.
        Ok(_) => {
            let started = shim.start(&id);
            let _ = shim.kill(&id, 9, false);
            let _ = shim.wait(&id, Duration::from_secs(10));
            let _ = shim.delete(&id);
            started.unwrap_err()
        }
        Err(err) => err,
    };
    assert!(err.to_string().contains("runc"), "{err}");
    shim.shutdown(false).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&dir.path().display().to_string()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "shim did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` is dead: gone, or a zombie waiting for its new parent.
fn dead(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn the_pid_namespace_init_holds_the_pods_namespace_and_ends_with_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let manager = shim_manager(dir.path());
    let runtime = OciRuntime::Binary(PathBuf::from(RUNC));
    let pod = unique("pidns-pod");
    let namespaces = PodNamespaces {
        pid: true,
        ..PodNamespaces::default()
    };
    let shim = manager.start(&pod, &runtime, namespaces, None).unwrap();
    let pids = shim.pids().unwrap();
    let init = pids
        .pid_namespace_init
        .expect("the pod's pid namespace init");
    let pod_namespace = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    assert_ne!(
        pod_namespace,
        std::fs::read_link("/proc/self/ns/pid").unwrap()
    );
    // Without asking, a shim holds no PID namespace.
    let other = unique("pidns-none");
    let plain = manager
        .start(&other, &runtime, PodNamespaces::default(), None)
        .unwrap();
    assert_eq!(plain.pids().unwrap().pid_namespace_init, None);
    plain.shutdown(false).unwrap();

    // A container joining the pod's namespace by the init's pid.
    let bundle = bundle(dir.path(), &["sleep", "1000"]);
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    for namespace in spec["linux"]["namespaces"].as_array_mut().unwrap() {
        if namespace["type"] == "pid" {
            namespace["path"] = format!("/proc/{init}/ns/pid").into();
        }
    }
    std::fs::write(&config, spec.to_string()).unwrap();
    let container = unique("joined");
    let pid = shim
        .create(&container, &bundle, &dir.path().join("logs/joined.log"))
        .unwrap();
    shim.start(&container).unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        pod_namespace
    );

    // However the shim ends, its init follows, and the pod's processes with it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids.shim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut ended = false;
    while !ended && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        ended = dead(pids.shim) && dead(init) && dead(pid);
    }
    // What runc kept of the container (its cgroup, its state) goes with runc, whatever
    // the outcome.
    let deleted = std::process::Command::new(RUNC)
        .arg("--root")
        .arg(manager.shim_dir(&pod).join("runc"))
        .args(["delete", "--force", &container])
        .status()
        .unwrap();
    assert!(ended, "the pod's processes outlived its shim");
    assert!(deleted.success());
}

/// A shim with one running `sleep 1000` container, for the exec tests. A test that
/// fails before [`SleepingPod::finish`] still stops both on drop.
struct SleepingPod {
    dir: tempfile::TempDir,
    manager: ShimManager,
    pod: String,
    shim: Shim,
    container: String,
    bundle: PathBuf,
    finished: bool,
}

impl SleepingPod {
    fn start(name: &str, runtime: &OciRuntime) -> SleepingPod {
        SleepingPod::start_with(name, runtime, |_| {})
    }

    /// A pod whose container's spec `edit` changed first.
    fn start_with(
        name: &str,
        runtime: &OciRuntime,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> SleepingPod {
        let dir = tempfile::tempdir().unwrap();
        let manager = shim_manager(dir.path());
        let pod = unique(&format!("{name}-pod"));
        let shim = manager
            .start(&pod, runtime, PodNamespaces::default(), None)
            .unwrap();
        let container = unique(name);
        let bundle = bundle(dir.path(), &["sleep", "1000"]);
        edit_spec(&bundle, edit);
        shim.create(&container, &bundle, &dir.path().join("logs/sleep.log"))
            .unwrap();
        shim.start(&container).unwrap();
        SleepingPod {
            dir,
            manager,
            pod,
            shim,
            container,
            bundle,
            finished: false,
        }
    }

    /// The container's process spec with `args`, as JSON: what CRI's ExecSync would send.
    fn process(&self, args: &[&str]) -> Vec<u8> {
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.bundle.join("config.json")).unwrap())
                .unwrap();
        let mut process = spec["process"].clone();
        process["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
        process.to_string().into_bytes()
    }

    /// Stops and deletes the container, shuts the shim down and checks that nothing is
    /// left: no process, no exec file, no runc state, no console socket.
    fn finish(mut self) {
        self.finished = true;
        let shim_pid = self.shim.pids().unwrap().shim;
        let SleepingPod {
            dir,
            manager,
            pod,
            shim,
            container,
            bundle,
            ..
        } = &self;
        shim.kill(container, 9, false).unwrap();
        shim.wait(container, Duration::from_secs(20))
            .unwrap()
            .unwrap();
        shim.delete(container).unwrap();
        shim.shutdown(false).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !processes_mentioning(&dir.path().display().to_string()).is_empty() {
            assert!(std::time::Instant::now() < deadline, "shim did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        let shim_dir = manager.shim_dir(pod);
        let left: Vec<_> = ["execs", "runc"]
            .iter()
            // `execs` exists once an ExecSync ran.
            .flat_map(|sub| std::fs::read_dir(shim_dir.join(sub)).into_iter().flatten())
            .flatten()
            .map(|entry| entry.path())
            .chain(
                std::fs::read_dir(bundle)
                    .unwrap()
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| {
                        path.file_name()
                            .is_some_and(|name| name.to_string_lossy().starts_with("exec-"))
                    }),
            )
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert_no_console_sockets(shim_pid);
    }
}

impl Drop for SleepingPod {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let _ = self.shim.kill(&self.container, 9, true);
        let _ = self.shim.wait(&self.container, Duration::from_secs(10));
        let _ = self.shim.delete(&self.container);
        let _ = self.shim.shutdown(true);
    }
}

fn exec_sync_returns_exit_code_and_output(runtime: OciRuntime) {
    let pod = SleepingPod::start("exec", &runtime);
    let (shim, container) = (&pod.shim, pod.container.as_str());

    let output = shim
        .exec_sync(
            container,
            "exec-1",
            &pod.process(&["sh", "-c", "echo out; echo err >&2; exit 7"]),
            Some(Duration::from_secs(20)),
            16 << 20,
        )
        .unwrap();
    assert_eq!(
        output,
        ExecOutput {
            exit_code: 7,
            stdout: b"out\n".to_vec(),
            stderr: b"err\n".to_vec(),
            timed_out: false,
        }
    );

    // Quick exits, which may come before runc has told the shim the exec's pid.
    for code in 0..10 {
        let output = shim
            .exec_sync(
                container,
                &format!("quick-{code}"),
                &pod.process(&["sh", "-c", &format!("exit {code}")]),
                Some(Duration::from_secs(20)),
                1024,
            )
            .unwrap();
        assert_eq!((output.exit_code, output.timed_out), (code, false));
    }

    // No timeout, and output beyond the cap is dropped.
    let output = shim
        .exec_sync(
            container,
            "exec-2",
            &pod.process(&["sh", "-c", "echo 0123456789; echo abcdefgh >&2"]),
            None,
            4,
        )
        .unwrap();
    assert_eq!((output.exit_code, output.timed_out), (0, false));
    assert_eq!(output.stdout, b"0123");
    assert_eq!(output.stderr, b"abcd");

    // The exec id may be reused once the exec is gone; a failed start is cleaned up too.
    let err = shim
        .exec_sync(
            container,
            "exec-1",
            &pod.process(&["/no/such/binary"]),
            None,
            1024,
        )
        .unwrap_err();
    assert!(err.to_string().contains("runc exec"), "{err}");

    assert!(matches!(
        shim.exec_sync(
            "no-such-container",
            "exec-3",
            &pod.process(&["echo"]),
            None,
            1024
        ),
        Err(ShimError::NotFound(_))
    ));
    for bad_id in ["../escape", "", "a/b", ".hidden"] {
        assert!(
            matches!(
                shim.exec_sync(container, bad_id, &pod.process(&["echo"]), None, 1024),
                Err(ShimError::InvalidArgument(_))
            ),
            "exec id {bad_id:?}"
        );
    }
    assert!(matches!(
        shim.exec_sync(container, "exec-4", b"{\"args\": []}", None, 1024),
        Err(ShimError::InvalidArgument(_))
    ));
    assert_eq!(shim.state(container).unwrap().status, TaskStatus::Running);

    // A stopped container runs no exec.
    shim.kill(container, 9, false).unwrap();
    shim.wait(container, Duration::from_secs(20))
        .unwrap()
        .unwrap();
    assert!(matches!(
        shim.exec_sync(container, "exec-5", &pod.process(&["echo"]), None, 1024),
        Err(ShimError::FailedPrecondition(_))
    ));
    pod.finish();
}

fn exec_sync_timeout_kills_the_whole_exec_tree_and_spares_the_container(runtime: OciRuntime) {
    let pod = SleepingPod::start("exectimeout", &runtime);
    // Durations no other process uses, so that the exec's processes can be told apart.
    let marks = [1, 2].map(|_| format!("sleep {}", unique_number()));
    let script = format!("{} & {}", marks[0], marks[1]);
    let process = pod.process(&["sh", "-c", &script]);
    let started = std::time::Instant::now();
    let (output, exec_pids) = std::thread::scope(|scope| {
        let exec = scope.spawn(|| {
            pod.shim.exec_sync(
                &pod.container,
                "timeout-1",
                &process,
                Some(Duration::from_secs(3)),
                1024,
            )
        });
        // Both sleeps run before the timeout: note their pids.
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        let mut pids = Vec::new();
        while pids.len() < 2 && std::time::Instant::now() < deadline {
            pids = marks
                .iter()
                .flat_map(|mark| processes_mentioning(mark))
                .map(|line| line.split(':').next().unwrap().to_string())
                .collect();
            std::thread::sleep(Duration::from_millis(20));
        }
        (exec.join().unwrap(), pids)
    });
    let output = output.unwrap();
    assert_eq!(exec_pids.len(), 2, "the exec's sleeps: {exec_pids:?}");
    assert!(output.timed_out, "{output:?}");
    assert_eq!(output.exit_code, 137);
    assert!(started.elapsed() < Duration::from_secs(15));
    // Gone, or dead and waiting for the container's init (sleep) to reap them.
    for pid in &exec_pids {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
            assert_eq!(state, Some("Z"), "exec process {pid} lives on: {stat}");
        }
    }
    for mark in &marks {
        assert!(processes_mentioning(mark).is_empty(), "{mark} lives on");
    }
    assert_eq!(
        pod.shim.state(&pod.container).unwrap().status,
        TaskStatus::Running,
        "the timeout killed the container"
    );
    // The container still runs execs.
    let output = pod
        .shim
        .exec_sync(
            &pod.container,
            "timeout-2",
            &pod.process(&["echo", "still here"]),
            Some(Duration::from_secs(20)),
            1024,
        )
        .unwrap();
    assert_eq!(
        (output.exit_code, output.stdout),
        (0, b"still here\n".to_vec())
    );
    pod.finish();
}

/// Changes the OCI spec of `bundle` with `edit`.
fn edit_spec(bundle: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut spec);
    std::fs::write(&path, spec.to_string()).unwrap();
}

/// A FIFO at `dir/name`, for a process's stdin.
fn fifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    path
}

/// Opens the FIFO at `path` for writing, as containerd's client does (the shim holds its
/// read end, so this does not block).
fn fifo_writer(path: &Path) -> std::fs::File {
    std::fs::File::options().write(true).open(path).unwrap()
}

/// Waits until the file at `path` holds `needle`; returns its text.
fn wait_for_text(path: &Path, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} never reached {}: {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that the shim `shim_pid` left none of its console sockets' directories.
fn assert_no_console_sockets(shim_pid: u32) {
    let mine = format!("{DIR_PREFIX}{shim_pid}-");
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&mine))
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "console sockets left: {left:?}");
}

/// Shuts an empty shim down and waits until nothing under `dir` runs.
fn shut_down(shim: Shim, dir: &Path) {
    let shim_pid = shim.pids().unwrap().shim;
    shim.shutdown(false).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&dir.display().to_string()).is_empty() {
        assert!(std::time::Instant::now() < deadline, "shim did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_no_console_sockets(shim_pid);
}

fn a_terminal_containers_output_lands_in_its_log(runtime: OciRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let manager = shim_manager(dir.path());
    let pod = unique("ttypod");
    let shim = manager
        .start(&pod, &runtime, PodNamespaces::default(), None)
        .unwrap();
    let script = "[ -t 0 ] && [ -t 1 ] && echo on a terminal; stty size; echo oops >&2";
    let bundle = bundle(dir.path(), &["sh", "-c", script]);
    edit_spec(&bundle, |spec| spec["process"]["terminal"] = true.into());
    let id = unique("tty");
    let log = dir.path().join("logs/tty.log");
    assert!(
        matches!(
            shim.create(&id, &bundle, &log),
            Err(ShimError::InvalidArgument(_))
        ),
        "the request and the spec disagree on the terminal"
    );
    let terminal = TaskIo {
        terminal: true,
        ..TaskIo::default()
    };
    shim.create_with_io(&id, &bundle, &log, &terminal).unwrap();
    // Sized before it runs, as kubelet's attach does.
    shim.resize_pty(&id, "", 120, 33).unwrap();
    shim.start(&id).unwrap();
    let exit = shim.wait(&id, Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!(exit.code, 0);
    shim.delete(&id).unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    for line in ["on a terminal", "33 120", "oops"] {
        assert!(
            text.lines()
                .any(|l| l.ends_with(&format!(" stdout F {line}"))),
            "{line:?} not in {text:?}"
        );
    }
    assert!(!text.contains('\r'), "{text:?}");
    assert!(
        !text.contains(" stderr "),
        "a terminal has one stream: {text:?}"
    );
    // Deleted before it ever ran: its terminal goes with it.
    let unstarted = unique("unstarted");
    shim.create_with_io(&unstarted, &bundle, &log, &terminal)
        .unwrap();
    let deleting = std::time::Instant::now();
    shim.delete(&unstarted).unwrap();
    assert!(deleting.elapsed() < Duration::from_secs(5));

    // A process without a terminal has none to resize.
    let plain = unique("plain");
    let plain_bundle = bundle_named(dir.path(), "plain", &["sh", "-c", "exit 0"]);
    shim.create(&plain, &plain_bundle, &dir.path().join("logs/plain.log"))
        .unwrap();
    let err = shim.resize_pty(&plain, "", 80, 24).unwrap_err();
    assert!(
        matches!(&err, ShimError::FailedPrecondition(message) if message.contains(&plain)),
        "{err}"
    );
    assert!(matches!(
        shim.resize_pty("no-such-container", "", 80, 24),
        Err(ShimError::NotFound(_))
    ));
    shim.delete(&plain).unwrap();
    shut_down(shim, dir.path());
}

/// [`bundle`] in a directory of its own, `name`, for a command another bundle of the
/// test runs too.
fn bundle_named(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    bundle(&dir.join(name), args)
}

fn an_exec_with_a_terminal_reads_its_stdin_and_sees_its_new_size(runtime: OciRuntime) {
    let pod = SleepingPod::start("exectty", &runtime);
    let (shim, container) = (&pod.shim, pod.container.as_str());
    let stdin = fifo(pod.dir.path(), "exec-stdin");
    let output = pod.dir.path().join("exec-tty.out");
    let mut process: serde_json::Value = serde_json::from_slice(&pod.process(&[
        "sh",
        "-c",
        "[ -t 1 ] && echo on a terminal; read line; echo \"got $line\"; stty size",
    ]))
    .unwrap();
    process["terminal"] = true.into();
    let io = TaskIo {
        terminal: true,
        stdin: Some(stdin.clone()),
    };
    let files = ExecOutputFiles {
        stdout: Some(output.clone()),
        stderr: None,
    };
    shim.exec(
        container,
        "tty-1",
        process.to_string().as_bytes(),
        &io,
        &files,
    )
    .unwrap();
    assert!(
        matches!(
            shim.resize_pty(container, "tty-1", 100, 42),
            Err(ShimError::FailedPrecondition(_))
        ),
        "an exec not started has no terminal yet"
    );
    shim.start_process(container, "tty-1").unwrap();
    shim.resize_pty(container, "tty-1", 100, 42).unwrap();
    // It waits for its line, so the size is set before it reads it.
    let mut writer = fifo_writer(&stdin);
    writer.write_all(b"hello\n").unwrap();
    drop(writer);
    let exit = shim
        .wait_process(container, "tty-1", Some(Duration::from_secs(20)))
        .unwrap()
        .unwrap();
    assert_eq!(exit.code, 0);
    let text = std::fs::read_to_string(&output).unwrap();
    for line in ["on a terminal\r\n", "got hello\r\n", "42 100\r\n"] {
        assert!(text.contains(line), "{line:?} not in {text:?}");
    }
    shim.delete_process(container, "tty-1").unwrap();
    // The embedded runtime's links to the console socket go with the exec.
    let state = pod.manager.shim_dir(&pod.pod).join("runc").join(container);
    let links: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name())
        .filter(|name| name.to_string_lossy().starts_with("tenant-"))
        .collect();
    assert!(links.is_empty(), "left in {}: {links:?}", state.display());

    assert!(matches!(
        shim.resize_pty(container, "", 80, 24),
        Err(ShimError::FailedPrecondition(_))
    ));
    assert!(matches!(
        shim.resize_pty(container, "no-such-exec", 80, 24),
        Err(ShimError::NotFound(_))
    ));
    pod.finish();
}

fn stdin_from_a_fifo_reaches_the_container_until_close_io(runtime: OciRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let manager = shim_manager(dir.path());
    let pod = unique("stdinpod");
    let shim = manager
        .start(&pod, &runtime, PodNamespaces::default(), None)
        .unwrap();
    let stdin = fifo(dir.path(), "stdin");
    let id = unique("cat");
    let log = dir.path().join("logs/cat.log");
    let io = TaskIo {
        stdin: Some(stdin.clone()),
        ..TaskIo::default()
    };
    shim.create_with_io(&id, &bundle(dir.path(), &["cat"]), &log, &io)
        .unwrap();
    shim.start(&id).unwrap();
    // Nobody writes yet: cat waits rather than reading EOF.
    assert_eq!(shim.wait(&id, Duration::from_millis(300)).unwrap(), None);
    let mut writer = fifo_writer(&stdin);
    writer.write_all(b"fed through a fifo\n").unwrap();
    wait_for_text(&log, " stdout F fed through a fifo\n");
    // The writer stays; CloseIO alone ends cat's input.
    assert_eq!(shim.wait(&id, Duration::from_millis(100)).unwrap(), None);
    shim.close_stdin(&id, "").unwrap();
    let exit = shim.wait(&id, Duration::from_secs(20)).unwrap().unwrap();
    assert_eq!(exit.code, 0, "cat read EOF and exited");
    drop(writer);
    shim.delete(&id).unwrap();
    assert!(matches!(
        shim.close_stdin(&id, ""),
        Err(ShimError::NotFound(_))
    ));
    shut_down(shim, dir.path());
}

fn pids_list_the_init_and_execs_by_exec_id(runtime: OciRuntime) {
    // No cgroupsPath in the spec: the shim finds the cgroup through the init.
    let pod = SleepingPod::start("pids", &runtime);
    let (shim, container) = (&pod.shim, pod.container.as_str());
    let init = shim.state(container).unwrap().pid;
    let stdin = fifo(pod.dir.path(), "cat-stdin");
    let output = pod.dir.path().join("cat.out");
    let io = TaskIo {
        stdin: Some(stdin.clone()),
        ..TaskIo::default()
    };
    let files = ExecOutputFiles {
        stdout: Some(output.clone()),
        stderr: None,
    };
    shim.exec(container, "cat-1", &pod.process(&["cat"]), &io, &files)
        .unwrap();
    let cat = shim.start_process(container, "cat-1").unwrap();
    let mut processes = shim.processes(container).unwrap();
    processes.sort_by_key(|process| process.pid);
    let mut expected = vec![
        TaskProcess {
            pid: init,
            exec_id: None,
        },
        TaskProcess {
            pid: cat,
            exec_id: Some("cat-1".to_string()),
        },
    ];
    expected.sort_by_key(|process| process.pid);
    assert_eq!(processes, expected);
    match shim.stats(container).unwrap() {
        TaskMetrics::V1(metrics) => assert!(metrics.memory.usage.usage > 0, "{metrics:?}"),
        TaskMetrics::V2(metrics) => assert!(metrics.memory.usage > 0, "{metrics:?}"),
    }

    // The exec's stdin: what is written reaches it, and CloseIO ends it.
    let mut writer = fifo_writer(&stdin);
    writer.write_all(b"piped\n").unwrap();
    wait_for_text(&output, "piped\n");
    shim.close_stdin(container, "cat-1").unwrap();
    let exit = shim
        .wait_process(container, "cat-1", Some(Duration::from_secs(20)))
        .unwrap()
        .unwrap();
    assert_eq!(exit.code, 0);
    drop(writer);
    shim.delete_process(container, "cat-1").unwrap();
    assert_eq!(
        shim.processes(container).unwrap(),
        vec![TaskProcess {
            pid: init,
            exec_id: None
        }]
    );
    assert!(matches!(
        shim.processes("no-such-container"),
        Err(ShimError::NotFound(_))
    ));
    assert!(matches!(
        shim.close_stdin(container, "no-such-exec"),
        Err(ShimError::NotFound(_))
    ));
    pod.finish();
}

/// Kills, execs and state reads on one container from several threads at once, as a
/// kubelet's probes, a stop and the shim's own leftover kills come: none may see the
/// runtime's state half-written (the embedded runtime saves it in place, so its commands
/// on one container take turns).
fn commands_on_one_container_at_the_same_time_all_succeed(runtime: OciRuntime) {
    let pod = SleepingPod::start("concurrent", &runtime);
    let (shim, container) = (&pod.shim, pod.container.as_str());
    let sigcont = 18;
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let pod = &pod;
            scope.spawn(move || {
                for round in 0..8 {
                    // Not `--all`: runc freezes the cgroup for it, and an exec
                    // meanwhile fails ("cannot exec in a paused container").
                    shim.kill(container, sigcont, false)
                        .unwrap_or_else(|err| panic!("thread {thread} kill {round}: {err}"));
                    let exec_id = format!("true-{thread}-{round}");
                    let output = shim
                        .exec_sync(
                            container,
                            &exec_id,
                            &pod.process(&["echo"]),
                            Some(Duration::from_secs(20)),
                            1024,
                        )
                        .unwrap_or_else(|err| panic!("thread {thread} exec {round}: {err}"));
                    assert_eq!(output.exit_code, 0, "thread {thread} exec {round}");
                }
            });
        }
    });
    assert_eq!(shim.state(container).unwrap().status, TaskStatus::Running);
    pod.finish();
}

fn stats_are_containerds_cgroup_metrics(runtime: OciRuntime) {
    // An absolute cgroupsPath, as criusd writes them.
    let cgroups_path = format!("/crius-test-{}", unique_number());
    let pod = SleepingPod::start_with("stats", &runtime, |spec| {
        spec["linux"]["cgroupsPath"] = cgroups_path.clone().into()
    });
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let cgroup_dir = if unified {
        PathBuf::from(format!("/sys/fs/cgroup{cgroups_path}"))
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/memory{cgroups_path}"))
    };
    assert!(cgroup_dir.exists(), "{}", cgroup_dir.display());
    match (unified, pod.shim.stats(&pod.container).unwrap()) {
        (false, TaskMetrics::V1(metrics)) => {
            let (cpu, memory) = (&metrics.cpu.usage, &metrics.memory);
            assert!(cpu.total > 0, "{metrics:?}");
            assert!(cpu.total >= cpu.user, "{metrics:?}");
            assert!(
                memory.usage.usage > 0 && memory.usage.limit > 0,
                "{metrics:?}"
            );
            assert!(metrics.pids.current >= 1, "{metrics:?}");
        }
        (true, TaskMetrics::V2(metrics)) => {
            assert!(metrics.cpu.usage_usec > 0, "{metrics:?}");
            assert!(metrics.memory.usage > 0, "{metrics:?}");
            assert!(metrics.memory.usage_limit > 0, "{metrics:?}");
            assert!(metrics.pids.current >= 1, "{metrics:?}");
        }
        (unified, metrics) => panic!("cgroup v2: {unified}, metrics: {metrics:?}"),
    }
    assert!(matches!(
        pod.shim.stats("no-such-container"),
        Err(ShimError::NotFound(_))
    ));
    pod.shim.kill(&pod.container, 9, false).unwrap();
    pod.shim
        .wait(&pod.container, Duration::from_secs(20))
        .unwrap()
        .unwrap();
    assert!(matches!(
        pod.shim.stats(&pod.container),
        Err(ShimError::FailedPrecondition(_))
    ));
    pod.finish();
    assert!(
        !cgroup_dir.exists(),
        "cgroup left: {}",
        cgroup_dir.display()
    );
}

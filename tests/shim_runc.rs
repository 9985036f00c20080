//! crius-shim driven through the shim manager, running real containers through runc's
//! command line, each test once with the embedded runtime (`crius-shim oci`) and once
//! with Debian's runc: the shim v2 Task lifecycle, exit codes, CRI-format logs,
//! reconnecting after the client goes away, and a shim that leaves nothing behind when it
//! shuts down; ExecSync's exec'd processes: exit codes, raw output and its cap, and a
//! timeout that kills the exec's whole process tree but not the container; the init
//! holding a pod's PID namespace, which ends with its shim and takes the pod's processes
//! with it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::bundles::busybox_bundle as bundle;
use common::processes_mentioning;
use crius::shim::daemon::PodNamespaces;
use crius::shim::manager::{ExecOutput, Shim, ShimManager, TaskStatus};
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
);

fn shim_manager(dir: &Path) -> ShimManager {
    ShimManager::new(Path::new(env!("CARGO_BIN_EXE_crius-shim")), dir).unwrap()
}

/// A number no other test uses at the same time: the tests of both runtimes run in one
/// process, and container ids name cgroups.
fn unique_number() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    // Of one width, so that none is a prefix of another.
    format!(
        "{}{:04}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
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
        let dir = tempfile::tempdir().unwrap();
        let manager = shim_manager(dir.path());
        let pod = unique(&format!("{name}-pod"));
        let shim = manager
            .start(&pod, runtime, PodNamespaces::default(), None)
            .unwrap();
        let container = unique(name);
        let bundle = bundle(dir.path(), &["sleep", "1000"]);
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
    /// left: no process, no exec file, no runc state.
    fn finish(mut self) {
        self.finished = true;
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
            .flat_map(|sub| std::fs::read_dir(shim_dir.join(sub)).unwrap().flatten())
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

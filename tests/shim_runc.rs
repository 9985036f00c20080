//! crius-shim driven through the shim manager, running real containers with Debian's runc:
//! the shim v2 Task lifecycle, exit codes, CRI-format logs, reconnecting after the client
//! goes away, and a shim that leaves nothing behind when it shuts down.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::images::host_busybox;
use common::processes_mentioning;
use crius::shim::manager::{ShimManager, TaskStatus};
use crius::shim::ShimError;

const RUNC: &str = "/usr/sbin/runc";

/// An OCI bundle running `args` in a rootfs of Debian's dynamic busybox, its libraries and
/// hard-linked applets; the spec is runc's default with a few changes.
fn bundle(dir: &Path, args: &[&str]) -> PathBuf {
    let bundle = dir.join(args.join("-").replace(['/', ' ', ';', '>', '&', '\''], "_"));
    let rootfs = bundle.join("rootfs");
    let busybox = host_busybox();
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::write(rootfs.join("bin/busybox"), &busybox.binary).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        rootfs.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for applet in ["sh", "echo", "sleep", "cat"] {
        std::fs::hard_link(rootfs.join("bin/busybox"), rootfs.join("bin").join(applet)).unwrap();
    }
    for (path, bytes) in &busybox.libraries {
        let target = rootfs.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, bytes).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let status = std::process::Command::new(RUNC)
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(status.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
    std::fs::write(&path, spec.to_string()).unwrap();
    bundle
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[test]
fn containers_run_exit_and_log_through_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ShimManager::new(
        Path::new(env!("CARGO_BIN_EXE_crius-shim")),
        Path::new(RUNC),
        dir.path(),
    );
    let pod = unique("pod");
    let shim = manager.start(&pod).unwrap();
    let shim_dir = manager.shim_dir(&pod);
    let shim_processes = processes_mentioning(&shim_dir.display().to_string());
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
    assert!(!shim_dir.join("shim.sock").exists(), "socket left behind");
    assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());
    let runc_state: Vec<_> = std::fs::read_dir(shim_dir.join("runc"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(runc_state.is_empty(), "runc state left: {runc_state:?}");
}

#[test]
fn a_failing_create_reports_runcs_error() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ShimManager::new(
        Path::new(env!("CARGO_BIN_EXE_crius-shim")),
        Path::new(RUNC),
        dir.path(),
    );
    let pod = unique("badpod");
    let shim = manager.start(&pod).unwrap();
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

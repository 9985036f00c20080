//! Containers with a terminal and an open stdin through the CRI, as kubelet creates them
//! (`tty: true`, `stdin: true`, e.g. for `kubectl run -it`): they start, what they print
//! lands in the CRI log as `stdout` lines, and an open stdin keeps a container that reads
//! it waiting rather than ending it. Once per runtime handler; the harness asserts that
//! nothing is left.

mod common;

use std::time::{Duration, Instant};

use common::pods::*;
use common::registry::Registry;
use crius::cri::api::*;

on_each_handler!(a_tty_container_logs_and_an_open_stdin_keeps_a_reader_waiting);

/// Waits until the log at `path` holds a line ending with `ending`; returns the log.
async fn wait_for_line(path: &std::path::Path, ending: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if log.lines().any(|line| line.ends_with(ending)) {
            return log;
        }
        assert!(Instant::now() < deadline, "no {ending:?} in {log:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_tty_container_logs_and_an_open_stdin_keeps_a_reader_waiting(handler: &str) {
    let registry = Registry::start();
    let (daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("tty", logs.path());
    let pod = run_pod_on(&mut client, &config, handler).await;

    // A terminal: one output stream, logged as stdout without the terminal's `\r`.
    let mut tty = container_config(
        "tty",
        &image,
        &[
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo on a terminal; echo to stderr >&2; exit 4",
        ],
    );
    tty.tty = true;
    let id = create(&mut client, &pod, &config, tty).await.unwrap();
    start(&mut client, &id).await;
    assert_eq!(wait_exited(&mut client, &id).await.exit_code, 4);
    let log = std::fs::read_to_string(logs.path().join("tty.log")).unwrap();
    for line in ["on a terminal", "to stderr"] {
        assert!(
            log.lines()
                .any(|l| l.ends_with(&format!(" stdout F {line}"))),
            "{line:?} not in {log:?}"
        );
    }
    assert!(!log.contains('\r'), "{log:?}");

    // An open stdin, with a terminal (`kubectl run -it`) and without: nobody writes to
    // it, so `read` waits and the container keeps running.
    for (name, tty) in [("interactive", true), ("stdin", false)] {
        let mut interactive = container_config(
            name,
            &image,
            &["sh", "-c", "echo waiting; read line; echo read ended"],
        );
        interactive.stdin = true;
        interactive.tty = tty;
        let id = create(&mut client, &pod, &config, interactive)
            .await
            .unwrap();
        start(&mut client, &id).await;
        let log_path = logs.path().join(format!("{name}.log"));
        wait_for_line(&log_path, " stdout F waiting").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            status(&mut client, &id).await.state,
            ContainerState::ContainerRunning as i32,
            "{name}: its stdin ended"
        );
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(!log.contains("read ended"), "{name}: {log:?}");
    }

    remove_pod(&mut client, &pod).await;
    drop(daemon);
}

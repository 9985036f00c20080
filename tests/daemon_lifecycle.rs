//! criusd as an operator runs it: start-up, the root lock, the socket, configuration
//! errors, logs and shutdown.

mod common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};

use common::{run_binary, Daemon};
use crius::cri::api::VersionRequest;
use nix::sys::signal::Signal;

const CRIUSD: &str = env!("CARGO_BIN_EXE_criusd");

#[test]
fn socket_is_0660_and_sigterm_exits_zero_removing_it() {
    let mut daemon = Daemon::start();
    let metadata = std::fs::metadata(daemon.socket()).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o660);
    daemon.stop();
    assert!(!daemon.socket().exists(), "socket left after SIGTERM");
    assert!(
        daemon.logs().contains("criusd stopped"),
        "{}",
        daemon.logs()
    );
}

#[test]
fn sigint_also_stops_cleanly() {
    let mut daemon = Daemon::start();
    let status = daemon.stop_with(Signal::SIGINT);
    assert!(status.success(), "{status}: {}", daemon.logs());
}

#[test]
fn second_daemon_on_the_same_root_refuses_naming_the_first() {
    let daemon = Daemon::start();
    // Same root, different socket: only the lock can stop it.
    let config = daemon.dir().join("second.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{}/second.sock\"\nroot = \"{}\"\nstate = \"{}/state2\"\n",
            daemon.dir().display(),
            daemon.root().display(),
            daemon.dir().display()
        ),
    )
    .unwrap();
    let (status, _, stderr) = run_binary(CRIUSD, &["--config", config.to_str().unwrap()]);
    assert!(!status.success());
    assert!(stderr.contains("already uses root"), "{stderr}");
    assert!(stderr.contains(&daemon.pid().to_string()), "{stderr}");
    assert!(!daemon.dir().join("second.sock").exists());
}

// Multi-threaded so the client's connection keeps answering HTTP/2 pings while the test
// thread waits for the daemon, as kubelet's would.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn stale_socket_from_a_killed_daemon_is_replaced() {
    let mut daemon = Daemon::start();
    let status = daemon.stop_with(Signal::SIGKILL);
    assert!(!status.success());
    assert!(
        daemon.socket().exists(),
        "SIGKILL should leave the socket behind"
    );
    daemon.spawn();
    let version = daemon
        .client()
        .await
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
    assert_eq!(version.into_inner().runtime_name, "crius");
    daemon.stop();
}

#[test]
fn daemon_refuses_a_socket_that_another_process_serves() {
    let first = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crius.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{}\"\nroot = \"{}/root\"\nstate = \"{}/state\"\n",
            first.socket().display(),
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let (status, _, stderr) = run_binary(CRIUSD, &["--config", config.to_str().unwrap()]);
    assert!(!status.success());
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(
        first.socket().exists(),
        "the live daemon's socket must survive"
    );
}

#[test]
fn bad_config_stops_start_up_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("lisen = \"/tmp/x.sock\"\n", "lisen"),
        ("log_level = \"loud\"\n", "log_level"),
        ("root = \"relative\"\n", "root"),
        (
            "[registries.\"docker.io\"]\nmirrors = [\"ftp://mirror\"]\n",
            "mirrors[0]",
        ),
        ("[registries.\"docker.io\"]\nmirors = []\n", "mirors"),
    ] {
        let config = dir.path().join("bad.toml");
        std::fs::write(&config, text).unwrap();
        let (status, _, stderr) = run_binary(CRIUSD, &["--config", config.to_str().unwrap()]);
        assert!(!status.success(), "{text:?} was accepted");
        assert!(stderr.contains(key), "{text:?}: {stderr}");
        assert!(
            stderr.contains(config.to_str().unwrap()),
            "{text:?}: {stderr}"
        );
        assert_eq!(
            stderr
                .trim()
                .lines()
                .filter(|l| l.starts_with("criusd:"))
                .count(),
            1,
            "{stderr}"
        );
    }
}

#[test]
fn missing_explicit_config_file_is_an_error() {
    let (status, _, stderr) = run_binary(CRIUSD, &["--config", "/nonexistent/crius.toml"]);
    assert!(!status.success());
    assert!(stderr.contains("/nonexistent/crius.toml"), "{stderr}");
}

#[test]
fn printed_default_config_is_accepted_and_means_the_defaults() {
    let (status, default_text, _) = run_binary(CRIUSD, &["config", "default"]);
    assert!(status.success());
    for key in [
        "listen",
        "root",
        "state",
        "log_level",
        "log_format",
        "cgroup_driver",
        "registries",
        "mirrors_only",
        "insecure",
    ] {
        assert!(
            default_text.contains(key),
            "default config does not mention {key}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crius.toml");
    std::fs::write(&config, &default_text).unwrap();
    let (status, from_file, stderr) = run_binary(
        CRIUSD,
        &["--config", config.to_str().unwrap(), "config", "check"],
    );
    assert!(status.success(), "{stderr}");
    std::fs::write(&config, "").unwrap();
    let (status, from_empty, _) = run_binary(
        CRIUSD,
        &["--config", config.to_str().unwrap(), "config", "check"],
    );
    assert!(status.success());
    assert_eq!(from_file, from_empty);
    assert!(
        from_file.contains("listen = \"/run/crius/crius.sock\""),
        "{from_file}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn json_logs_carry_one_span_per_rpc() {
    let mut daemon = Daemon::start_with("log_format = \"json\"\nlog_level = \"debug\"");
    let mut client = daemon.client().await;
    client
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
    daemon.stop();
    let logs = daemon.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|line| line["span"]["rpc"] == "Version" && line["fields"]["message"] == "ok"),
        "no log line for the Version RPC in:\n{logs}"
    );
}

/// A client that holds a connection but never reads from it (its runtime is blocked) must
/// not keep criusd alive past the shutdown grace period.
#[tokio::test(flavor = "current_thread")]
async fn stuck_client_does_not_block_shutdown() {
    let mut daemon = Daemon::start();
    let mut client = daemon.client().await;
    client
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    daemon.stop();
    let took = started.elapsed();
    assert!(
        took >= crius::daemon::SHUTDOWN_GRACE / 2,
        "stopped in {took:?}: was the client really stuck?"
    );
    assert!(
        daemon.logs().contains("did not finish in time"),
        "{}",
        daemon.logs()
    );
}

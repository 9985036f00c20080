//! Pods and containers through the CRI, as kubelet drives them: real namespaces held by
//! the pod's shim, overlay rootfs, CRI logs, exit codes, stop and remove, restarts of
//! criusd, ExecSync, stats and OOM kills, seccomp, and bad requests. The tests of what the
//! OCI runtime does run once per runtime handler: the default (embedded) one and runc.
//! Every test removes what it created and the harness asserts that no mount or process is
//! left.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::pods::*;
use common::registry::Registry;
use crius::cri::api::security_profile::ProfileType;
use crius::cri::api::*;
use tonic::Code;

on_each_handler!(
    a_pod_runs_a_container_that_exits_and_logs,
    stop_sends_sigterm_then_sigkill_and_remove_is_idempotent,
    containers_outlive_a_daemon_restart_and_exits_meanwhile_are_kept,
    exec_sync_runs_in_the_container_and_its_timeout_spares_the_container,
    stats_come_from_the_cgroup_and_an_oom_kill_is_reported_as_such,
    runtime_default_seccomp_confines_the_container_and_its_execs,
);

async fn a_pod_runs_a_container_that_exits_and_logs(handler: &str) {
    let registry = Registry::start();
    let (daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("web", logs.path());
    let pod = run_pod_on(&mut client, &config, handler).await;
    assert_eq!(pod.len(), 64);

    // A retry of the same pod attempt gets the same sandbox.
    assert_eq!(run_pod_on(&mut client, &config, handler).await, pod);
    let sandbox = client
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        sandbox.status.as_ref().unwrap().state,
        PodSandboxState::SandboxReady as i32
    );
    assert_eq!(sandbox.status.as_ref().unwrap().labels["app"], "web");
    assert_eq!(sandbox.status.as_ref().unwrap().runtime_handler, handler);
    let info: serde_json::Value = serde_json::from_str(&sandbox.info["info"]).unwrap();
    let shim_pid = info["pid"].as_u64().unwrap();
    let pod_netns = std::fs::read_link(format!("/proc/{shim_pid}/ns/net")).unwrap();
    assert_ne!(
        pod_netns,
        std::fs::read_link("/proc/self/ns/net").unwrap(),
        "the pod needs its own netns"
    );

    let id = create(
        &mut client,
        &pod,
        &config,
        container_config("hello", &image, &["sh", "-c", "echo hello from $(hostname); echo to-stderr >&2; grep : /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' , ; echo; exit 3"]),
    )
    .await
    .unwrap();
    assert_eq!(
        status(&mut client, &id).await.state,
        ContainerState::ContainerCreated as i32
    );
    start(&mut client, &id).await;
    let exited = wait_exited(&mut client, &id).await;
    assert_eq!(exited.exit_code, 3);
    assert_eq!(exited.reason, "Error");
    assert!(exited.started_at > 0 && exited.finished_at >= exited.started_at);
    assert_eq!(exited.image_ref, exited.image_id);
    let log = std::fs::read_to_string(logs.path().join("hello.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(" stdout F hello from web-host")),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l.ends_with(" stderr F to-stderr")),
        "{log}"
    );
    // The pod's own interfaces: loopback and its end of the veth pair.
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F eth0,lo,")),
        "{log}"
    );

    let listed = client
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.containers.len(), 1);
    let listed = client
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(PodSandboxFilter {
                label_selector: HashMap::from([("app".to_string(), "other".to_string())]),
                ..PodSandboxFilter::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.items.is_empty());

    remove_pod(&mut client, &pod).await;
    assert!(list_containers(&mut client).await.is_empty());
    // The pod's shim published the container's task events to criusd, which got them.
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !daemon.logs().lines().any(|line| {
            line.contains("task event")
                && line.contains("namespace=crius")
                && line.contains(&format!("topic={topic}"))
                && line.contains(&id)
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "criusd got no {topic} event for {id}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let err = client
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Stop and remove again: idempotent.
    remove_pod(&mut client, &pod).await;
    drop(daemon);
}

async fn stop_sends_sigterm_then_sigkill_and_remove_is_idempotent(handler: &str) {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("stopper", logs.path());
    let pod = run_pod_on(&mut client, &config, handler).await;

    // Exits on SIGTERM with 143.
    let polite = create(
        &mut client,
        &pod,
        &config,
        container_config(
            "polite",
            &image,
            &[
                "sh",
                "-c",
                "trap 'exit 143' TERM; while true; do sleep 0.1; done",
            ],
        ),
    )
    .await
    .unwrap();
    // PID 1 ignores SIGTERM: only SIGKILL ends it.
    let stubborn = create(
        &mut client,
        &pod,
        &config,
        container_config("stubborn", &image, &["sleep", "1000"]),
    )
    .await
    .unwrap();
    start(&mut client, &polite).await;
    start(&mut client, &stubborn).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&mut client, &polite).await.state,
        ContainerState::ContainerRunning as i32
    );

    let stop = |id: &str, timeout| StopContainerRequest {
        container_id: id.to_string(),
        timeout,
    };
    client
        .runtime
        .stop_container(stop(&polite, 10))
        .await
        .unwrap();
    assert_eq!(status(&mut client, &polite).await.exit_code, 143);
    let started = Instant::now();
    client
        .runtime
        .stop_container(stop(&stubborn, 1))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "SIGKILL came before the timeout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop must not wait longer than asked"
    );
    assert_eq!(status(&mut client, &stubborn).await.exit_code, 137);
    client
        .runtime
        .stop_container(stop(&stubborn, 1))
        .await
        .unwrap();

    for _ in 0..2 {
        client
            .runtime
            .remove_container(RemoveContainerRequest {
                container_id: stubborn.clone(),
            })
            .await
            .unwrap();
    }
    let err = client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: stubborn.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    remove_pod(&mut client, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_naming_what_is_wrong_and_leave_nothing() {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("picky", logs.path());

    let err = client
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: None,
            runtime_handler: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("config"), "{}", err.message());
    let err = client
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "kata".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("\"kata\"")
            && err
                .message()
                .contains("known: \"\", \"embedded\", \"runc\""),
        "names the handler and the known ones: {}",
        err.message()
    );

    let pod = run_pod(&mut client, &config).await;
    let err = create(
        &mut client,
        "0000",
        &config,
        container_config("c", &image, &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = create(
        &mut client,
        &pod,
        &config,
        container_config("c", "example.com/not/pulled:1", &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("example.com/not/pulled:1"),
        "{}",
        err.message()
    );
    let mut bad_mount = container_config("c", &image, &["true"]);
    bad_mount.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: "/nonexistent/crius-test-path".into(),
        ..Mount::default()
    });
    let err = create(&mut client, &pod, &config, bad_mount)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("host_path"), "{}", err.message());

    let id = create(
        &mut client,
        &pod,
        &config,
        container_config("c", &image, &["true"]),
    )
    .await
    .unwrap();
    let err = create(
        &mut client,
        &pod,
        &config,
        container_config("c", &image, &["true"]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains(&id), "{}", err.message());
    // Failed creates left no container behind.
    let listed = client
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.containers.len(), 1);
    remove_pod(&mut client, &pod).await;
}

async fn containers_outlive_a_daemon_restart_and_exits_meanwhile_are_kept(handler: &str) {
    let registry = Registry::start();
    let (mut daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("durable", logs.path());
    let pod = run_pod_on(&mut client, &config, handler).await;
    let long = create(
        &mut client,
        &pod,
        &config,
        container_config("long", &image, &["sleep", "1000"]),
    )
    .await
    .unwrap();
    let short = create(
        &mut client,
        &pod,
        &config,
        container_config("short", &image, &["sh", "-c", "sleep 1; exit 7"]),
    )
    .await
    .unwrap();
    start(&mut client, &long).await;
    start(&mut client, &short).await;
    drop(client);

    daemon.stop_with(nix::sys::signal::Signal::SIGKILL);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.spawn();
    let mut client = daemon.client().await;
    assert_eq!(
        status(&mut client, &long).await.state,
        ContainerState::ContainerRunning as i32
    );
    let exited = wait_exited(&mut client, &short).await;
    assert_eq!(
        exited.exit_code, 7,
        "the exit that happened while criusd was down"
    );

    // The running one is still managed: stop works and reports the real exit.
    client
        .runtime
        .stop_container(StopContainerRequest {
            container_id: long.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    assert_eq!(status(&mut client, &long).await.exit_code, 137);
    remove_pod(&mut client, &pod).await;
}

async fn exec_sync_runs_in_the_container_and_its_timeout_spares_the_container(handler: &str) {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("execs", logs.path());
    let pod = run_pod_on(&mut client, &config, handler).await;
    let mut spec = container_config("target", &image, &["sleep", "1000"]);
    spec.envs.push(KeyValue {
        key: "GREETING".into(),
        value: b"hi there".to_vec(),
    });
    let id = create(&mut client, &pod, &config, spec).await.unwrap();
    start(&mut client, &id).await;

    let exec = |cmd: &[&str], timeout| ExecSyncRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    };
    let output = client
        .runtime
        .exec_sync(exec(
            &[
                "sh",
                "-c",
                "echo $GREETING from $(hostname); echo oops >&2; exit 4",
            ],
            10,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(output.stdout, b"hi there from execs-host\n");
    assert_eq!(output.stderr, b"oops\n");
    assert_eq!(output.exit_code, 4);

    let started = Instant::now();
    let err = client
        .runtime
        .exec_sync(exec(&["sleep", "100"], 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        status(&mut client, &id).await.state,
        ContainerState::ContainerRunning as i32
    );

    client
        .runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let err = client
        .runtime
        .exec_sync(exec(&["true"], 5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    remove_pod(&mut client, &pod).await;
}

async fn stats_come_from_the_cgroup_and_an_oom_kill_is_reported_as_such(handler: &str) {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("limits", logs.path());
    let pod = run_pod_on(&mut client, &config, handler).await;

    let mut busy = container_config(
        "busy",
        &image,
        &["sh", "-c", "echo data > /written; while true; do :; done"],
    );
    busy.labels.insert("role".into(), "busy".into());
    let busy = create(&mut client, &pod, &config, busy).await.unwrap();
    start(&mut client, &busy).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = client
        .runtime
        .container_stats(ContainerStatsRequest {
            container_id: busy.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    assert!(stats.memory.unwrap().usage_bytes.unwrap().value > 0);
    assert!(
        stats.writable_layer.unwrap().used_bytes.unwrap().value >= 5,
        "the file the container wrote"
    );
    let listed = client
        .runtime
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                label_selector: HashMap::from([("role".to_string(), "busy".to_string())]),
                ..ContainerStatsFilter::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.stats.len(), 1);

    let mut hungry = container_config(
        "hungry",
        &image,
        &[
            "sh",
            "-c",
            "x=$(head -c 200000000 /dev/zero | tr '\\000' x); echo survived",
        ],
    );
    hungry.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            memory_limit_in_bytes: 32 * 1024 * 1024,
            ..LinuxContainerResources::default()
        }),
        ..LinuxContainerConfig::default()
    });
    let hungry = create(&mut client, &pod, &config, hungry).await.unwrap();
    start(&mut client, &hungry).await;
    let exited = wait_exited(&mut client, &hungry).await;
    assert_eq!(exited.reason, "OOMKilled", "{exited:?}");
    assert_eq!(exited.exit_code, 137);
    remove_pod(&mut client, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_container_log_follows_kubelets_rotation() {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("rotating", logs.path());
    let pod = run_pod(&mut client, &config).await;
    let id = create(
        &mut client,
        &pod,
        &config,
        container_config(
            "ticker",
            &image,
            &["sh", "-c", "while true; do echo tick; sleep 0.05; done"],
        ),
    )
    .await
    .unwrap();
    start(&mut client, &id).await;
    let log = logs.path().join("ticker.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no output");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // kubelet's rotation: rename, then ask the runtime to reopen.
    let rotated = logs.path().join("ticker.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    client
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let rotated_size = std::fs::metadata(&rotated).unwrap().len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new_log = std::fs::read_to_string(&log).expect("a new log file after reopen");
    assert!(
        new_log.lines().any(|l| l.ends_with(" stdout F tick")),
        "{new_log}"
    );
    assert!(
        std::fs::metadata(&rotated).unwrap().len() <= rotated_size + 64,
        "output still goes to the rotated file"
    );

    client
        .runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let err = client
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    remove_pod(&mut client, &pod).await;
}

async fn runtime_default_seccomp_confines_the_container_and_its_execs(handler: &str) {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("seccomp", logs.path());
    let pod = run_pod_on(&mut client, &config, handler).await;
    // Creating a user namespace takes no capability, so only a filter refuses it:
    // RuntimeDefault allows `unshare` with CAP_SYS_ADMIN alone, which containers lack.
    let probe = "grep Seccomp: /proc/self/status; unshare -U true && echo unshared || echo refused";
    let mut containers = Vec::new();
    for (name, profile, expected) in [
        (
            "confined",
            ProfileType::RuntimeDefault,
            "Seccomp:\t2\nrefused\n",
        ),
        ("free", ProfileType::Unconfined, "Seccomp:\t0\nunshared\n"),
    ] {
        let mut container = container_config(
            name,
            &image,
            &["sh", "-c", &format!("{probe}; exec sleep 1000")],
        );
        container.linux = Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: profile as i32,
                    localhost_ref: String::new(),
                }),
                ..LinuxContainerSecurityContext::default()
            }),
            ..LinuxContainerConfig::default()
        });
        let id = create(&mut client, &pod, &config, container).await.unwrap();
        start(&mut client, &id).await;
        containers.push((id, logs.path().join(format!("{name}.log")), expected));
    }
    for (id, log, expected) in &containers {
        // The container's own process...
        let deadline = Instant::now() + Duration::from_secs(10);
        let output = loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let output: String = text
                .lines()
                .filter_map(|line| line.split_once(" stdout F "))
                .map(|(_, text)| format!("{text}\n"))
                .collect();
            if output.lines().count() >= 2 || Instant::now() > deadline {
                break output;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(&output, expected, "{log:?}");
        // ...and what is exec'd in it.
        let (code, stdout, _) = exec(&mut client, id, &["sh", "-c", probe]).await;
        assert_eq!((code, stdout.as_str()), (0, *expected), "exec in {log:?}");
    }
    remove_pod(&mut client, &pod).await;
}

//! The pid namespace modes of the CRI, in real namespaces: POD (one namespace for the
//! pod's containers, held by the shim's init, not by any container), CONTAINER (each its
//! own), NODE (the host's) and TARGET (another container's). A container that exits in a
//! shared namespace leaves no process behind, the pod's namespace outlives a criusd
//! restart, and removing the pod leaves nothing (the harness checks).

mod common;

use std::path::PathBuf;

use common::pods::*;
use common::registry::Registry;
use crius::cri::api::*;
use crius::cri::client::CriClient;
use tonic::Code;

/// `pod_config` with the pod's pid namespace mode set to `mode`.
fn pod_with_pid_mode(name: &str, logs: &std::path::Path, mode: NamespaceMode) -> PodSandboxConfig {
    let mut config = pod_config(name, logs);
    let options = config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
        .and_then(|security| security.namespace_options.as_mut())
        .unwrap();
    options.pid = mode as i32;
    config
}

/// `container_config` with the container's pid namespace mode set as kubelet sets it.
fn container_with_pid_mode(
    name: &str,
    image: &str,
    command: &[&str],
    mode: NamespaceMode,
    target_id: &str,
) -> ContainerConfig {
    let mut config = container_config(name, image, command);
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: mode as i32,
                target_id: target_id.to_string(),
                ..NamespaceOption::default()
            }),
            ..LinuxContainerSecurityContext::default()
        }),
        ..LinuxContainerConfig::default()
    });
    config
}

/// The host's name of the pid namespace of the container's init.
async fn pid_namespace_of(client: &mut CriClient, id: &str) -> PathBuf {
    let pid = container_info(client, id).await["pid"].as_u64().unwrap();
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap()
}

fn host_pid_namespace() -> PathBuf {
    std::fs::read_link("/proc/self/ns/pid").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_a_pod_share_its_pid_namespace_whose_pid_1_is_not_theirs() {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_with_pid_mode("shared", logs.path(), NamespaceMode::Pod);
    let pod = run_pod(&mut client, &config).await;
    let sandbox = client
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    let options = sandbox
        .status
        .and_then(|status| status.linux)
        .and_then(|linux| linux.namespaces)
        .and_then(|namespaces| namespaces.options)
        .unwrap();
    assert_eq!(options.pid, NamespaceMode::Pod as i32);

    // A leaves a child behind when its init ends; the protobuf default (POD) everywhere.
    let a = run_in_pod(
        &mut client,
        &pod,
        &config,
        container_config("a", &image, &["sh", "-c", "sleep 3001 & sleep 3002"]),
    )
    .await;
    let b = run_in_pod(
        &mut client,
        &pod,
        &config,
        container_config("b", &image, &["sleep", "3003"]),
    )
    .await;
    let shared = pid_namespace_of(&mut client, &a).await;
    assert_eq!(shared, pid_namespace_of(&mut client, &b).await);
    assert_ne!(shared, host_pid_namespace());

    let seen_from_b = exec_ok(&mut client, &b, &["ps", "-o", "pid,args"]).await;
    for process in ["sleep 3001", "sleep 3002", "sleep 3003"] {
        assert!(seen_from_b.contains(process), "{process}: {seen_from_b}");
    }
    // pid 1 is the pod's init: not A's process, though A started first.
    let init = exec_ok(&mut client, &b, &["cat", "/proc/1/cmdline"]).await;
    assert!(!init.contains("sleep"), "{init:?}");
    // The init shows nothing of the host even to a container that may ptrace it.
    let prying = privileged(container_config("prying", &image, &["sleep", "3004"]));
    let prying = run_in_pod(&mut client, &pod, &config, prying).await;
    let behind_init = exec_ok(&mut client, &prying, &["ls", "-A", "/proc/1/root/"]).await;
    assert_eq!(behind_init, "", "the init's root must be empty");

    // A stopped politely (SIGTERM to its init only): its other process goes with it,
    // and the namespace stays for B.
    client
        .runtime
        .stop_container(StopContainerRequest {
            container_id: a.clone(),
            timeout: 10,
        })
        .await
        .unwrap();
    assert_eq!(
        status(&mut client, &a).await.state,
        ContainerState::ContainerExited as i32
    );
    let seen_from_b = exec_ok(&mut client, &b, &["ps", "-o", "pid,args"]).await;
    for gone in ["sleep 3001", "sleep 3002"] {
        assert!(
            !seen_from_b.contains(gone),
            "{gone} outlived A: {seen_from_b}"
        );
    }
    assert!(seen_from_b.contains("sleep 3003"), "{seen_from_b}");

    // A new container joins the namespace that outlived A.
    let c = run_in_pod(
        &mut client,
        &pod,
        &config,
        container_config("c", &image, &["sleep", "3005"]),
    )
    .await;
    assert_eq!(pid_namespace_of(&mut client, &c).await, shared);
    remove_pod(&mut client, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pods_pid_namespace_outlives_a_daemon_restart() {
    let registry = Registry::start();
    let (mut daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_with_pid_mode("durable-pid", logs.path(), NamespaceMode::Pod);
    let pod = run_pod(&mut client, &config).await;
    let first = run_in_pod(
        &mut client,
        &pod,
        &config,
        container_config("first", &image, &["sleep", "3011"]),
    )
    .await;
    drop(client);
    daemon.stop_with(nix::sys::signal::Signal::SIGKILL);
    daemon.spawn();
    let mut client = daemon.client().await;

    let second = run_in_pod(
        &mut client,
        &pod,
        &config,
        container_config("second", &image, &["sleep", "3012"]),
    )
    .await;
    assert_eq!(
        pid_namespace_of(&mut client, &first).await,
        pid_namespace_of(&mut client, &second).await
    );
    let seen = exec_ok(&mut client, &second, &["ps", "-o", "args"]).await;
    assert!(seen.contains("sleep 3011"), "{seen}");
    remove_pod(&mut client, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_node_and_target_pid_modes() {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();

    // CONTAINER: each its own namespace, where its process is pid 1.
    let config = pod_with_pid_mode("separate", logs.path(), NamespaceMode::Container);
    let pod = run_pod(&mut client, &config).await;
    let own = |name: &str, command: &[&str]| {
        container_with_pid_mode(name, &image, command, NamespaceMode::Container, "")
    };
    let a = run_in_pod(&mut client, &pod, &config, own("a", &["sleep", "3021"])).await;
    // POD (the default) in such a pod means the same: its containers' way, its own.
    let b = run_in_pod(
        &mut client,
        &pod,
        &config,
        container_config("b", &image, &["sleep", "3022"]),
    )
    .await;
    assert_ne!(
        pid_namespace_of(&mut client, &a).await,
        pid_namespace_of(&mut client, &b).await
    );
    let pid_1 = exec_ok(&mut client, &b, &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(pid_1, "sleep\x003022\0");

    // TARGET: the target's namespace, where the target's process is pid 1.
    let debug = container_with_pid_mode(
        "debug",
        &image,
        &["sleep", "3023"],
        NamespaceMode::Target,
        &a,
    );
    let debug = run_in_pod(&mut client, &pod, &config, debug).await;
    assert_eq!(
        pid_namespace_of(&mut client, &debug).await,
        pid_namespace_of(&mut client, &a).await
    );
    let pid_1 = exec_ok(&mut client, &debug, &["cat", "/proc/1/cmdline"]).await;
    assert_eq!(pid_1, "sleep\x003021\0");

    // A target must be a running container of the same pod.
    let unknown = container_with_pid_mode(
        "lost",
        &image,
        &["true"],
        NamespaceMode::Target,
        "0123456789",
    );
    let err = create(&mut client, &pod, &config, unknown)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("target_id"), "{}", err.message());
    client
        .runtime
        .stop_container(StopContainerRequest {
            container_id: b.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let stopped_target =
        container_with_pid_mode("late", &image, &["true"], NamespaceMode::Target, &b);
    let err = create(&mut client, &pod, &config, stopped_target)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    remove_pod(&mut client, &pod).await;

    // NODE: the host's namespace, where this test's process is visible.
    let config = pod_with_pid_mode("host-pids", logs.path(), NamespaceMode::Node);
    let pod = run_pod(&mut client, &config).await;
    let host = container_with_pid_mode("host", &image, &["sleep", "3024"], NamespaceMode::Node, "");
    let host = run_in_pod(&mut client, &pod, &config, host).await;
    assert_eq!(
        pid_namespace_of(&mut client, &host).await,
        host_pid_namespace()
    );
    let me = format!("/proc/{}", std::process::id());
    exec_ok(&mut client, &host, &["test", "-d", &me]).await;
    remove_pod(&mut client, &pod).await;

    // TARGET is for containers; a pod cannot ask for it.
    let config = pod_with_pid_mode("targeted", logs.path(), NamespaceMode::Target);
    let err = try_run_pod(&mut client, &config).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}

on_each_handler!(a_shared_pid_namespace_holds_a_dozen_containers_each_seeing_its_own_cgroup);

/// A dozen containers join one POD-mode namespace, where their pids run past any the
/// host has low down (the embedded runtime once looked such a pid up in the host's
/// /proc and failed the 8th container), and each container's /sys/fs/cgroup shows its
/// own cgroup, read-only: its memory limit, its processes. The pod then goes with
/// containers that never started.
async fn a_shared_pid_namespace_holds_a_dozen_containers_each_seeing_its_own_cgroup(handler: &str) {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_with_pid_mode("dozen", logs.path(), NamespaceMode::Pod);
    let pod = run_pod_on(&mut client, &config, handler).await;
    let unified = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (limit_file, procs_file) = if unified {
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/cgroup.procs")
    } else {
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/pids/cgroup.procs",
        )
    };
    for n in 1..=12u64 {
        let mut container = container_config(&format!("c{n}"), &image, &["sleep", "3100"]);
        let limit = (32 + n) << 20;
        container.linux = Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: limit as i64,
                ..LinuxContainerResources::default()
            }),
            ..LinuxContainerConfig::default()
        });
        let id = run_in_pod(&mut client, &pod, &config, container).await;
        let seen = exec_ok(&mut client, &id, &["cat", limit_file]).await;
        assert_eq!(seen.trim(), limit.to_string(), "container {n}");
        // Its own sleep and the exec reading, not the pod's dozen sleeps or the host's.
        let procs = exec_ok(&mut client, &id, &["cat", procs_file]).await;
        assert!(
            (2..=3).contains(&procs.lines().count()),
            "container {n}: {procs}"
        );
        let read_only = exec(&mut client, &id, &["touch", limit_file]).await;
        assert_ne!(read_only.0, 0, "container {n} wrote its cgroup");
    }
    let running = list_containers(&mut client)
        .await
        .into_iter()
        .filter(|c| c.pod_sandbox_id == pod && c.state == ContainerState::ContainerRunning as i32)
        .count();
    assert_eq!(running, 12);
    // Containers created and never started go with the pod: the runtime's delete kills
    // their inits, and nothing else may then act on what it removes.
    for n in 13..=16 {
        let container = container_config(&format!("c{n}"), &image, &["sleep", "3100"]);
        create(&mut client, &pod, &config, container).await.unwrap();
    }
    remove_pod(&mut client, &pod).await;
}

//! Pods through faults kubelet's node sees: criusd SIGKILLed while pods run, a pod's
//! shim killed, and many pods with containers created and removed one after another.
//! The harness checks at teardown that no mount, process, veth or address is left.

mod common;

use std::time::{Duration, Instant};

use common::pods::*;
use common::registry::Registry;
use crius::cri::api::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_pods_keep_running_through_a_sigkilled_daemon() {
    let registry = Registry::start();
    let (mut daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let mut pods = Vec::new();
    for n in 0..10 {
        let config = pod_config(&format!("steady-{n}"), logs.path());
        let (pod, container) = run_pod_with(&mut client, &config, &image, &["sleep", "1000"]).await;
        let ip = pod_status(&mut client, &pod)
            .await
            .status
            .unwrap()
            .network
            .unwrap()
            .ip;
        pods.push((pod, container, ip));
    }
    drop(client);

    daemon.stop_with(Signal::SIGKILL);
    daemon.spawn();
    let mut client = daemon.client().await;
    let listed = list_pods(&mut client).await;
    assert_eq!(listed.len(), 10);
    assert!(listed
        .iter()
        .all(|pod| pod.state == PodSandboxState::SandboxReady as i32));
    let containers = list_containers(&mut client).await;
    assert_eq!(containers.len(), 10);
    assert!(containers
        .iter()
        .all(|container| container.state == ContainerState::ContainerRunning as i32));
    for (pod, container, ip) in &pods {
        let (code, out, _) = exec(&mut client, container, &["hostname"]).await;
        assert_eq!(code, 0);
        assert!(out.starts_with("steady-"), "{out}");
        let now = pod_status(&mut client, pod)
            .await
            .status
            .unwrap()
            .network
            .unwrap()
            .ip;
        assert_eq!(&now, ip, "a pod keeps its address across the restart");
    }
    for (pod, _, _) in &pods {
        remove_pod(&mut client, pod).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shim_marks_its_containers_exited_and_the_pod_still_removes_cleanly() {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("orphaned", logs.path());
    let (pod, container) = run_pod_with(&mut client, &config, &image, &["sleep", "1000"]).await;
    let info: serde_json::Value =
        serde_json::from_str(&pod_status(&mut client, &pod).await.info["info"]).unwrap();
    let shim_pid = info["pid"].as_u64().unwrap() as i32;
    let container_pid = container_info(&mut client, &container).await["pid"]
        .as_u64()
        .unwrap() as i32;

    kill(Pid::from_raw(shim_pid), Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exited = loop {
        let current = status(&mut client, &container).await;
        if current.state == ContainerState::ContainerExited as i32 {
            break current;
        }
        assert!(
            Instant::now() < deadline,
            "never reported exited: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exited.reason, "ShimLost");
    assert!(!exited.message.is_empty());
    let pod_state = pod_status(&mut client, &pod).await.status.unwrap().state;
    assert_eq!(pod_state, PodSandboxState::SandboxNotready as i32);

    // Removing the pod ends the orphaned container too.
    remove_pod(&mut client, &pod).await;
    let gone = Instant::now() + Duration::from_secs(5);
    while process_alive(container_pid) {
        assert!(
            Instant::now() < gone,
            "the orphaned container {container_pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `pid` runs (a zombie waiting for init does not).
fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_string))
        })
        .is_some_and(|state| state != "Z" && state != "X")
}

/// 100 pods, each with a container that runs, created and removed one after another:
/// nothing accumulates (the harness asserts mounts, processes, veths and addresses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_pod_and_container_cycles_leak_nothing() {
    let registry = Registry::start();
    let (daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let mut removed = Vec::new();
    for cycle in 0..100 {
        let config = pod_config(&format!("cycle-{cycle}"), logs.path());
        let (pod, container) = run_pod_with(&mut client, &config, &image, &["sleep", "1000"]).await;
        remove_pod(&mut client, &pod).await;
        removed.push(container);
    }
    // Each container had a cgroup named after it in every hierarchy (cgroupfs driver).
    for container in &removed {
        for hierarchy in ["memory", "pids", "cpu", "unified", ""] {
            let cgroup = std::path::Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join(format!("crius-{container}"));
            assert!(!cgroup.exists(), "{} left", cgroup.display());
        }
    }
    assert!(list_pods(&mut client).await.is_empty());
    assert!(list_containers(&mut client).await.is_empty());
    for dir in ["sandboxes", "containers", "netns", "shims"] {
        let left = common::entries(&daemon.state().join(dir)).unwrap_or(0);
        assert_eq!(left, 0, "state/{dir} keeps entries of removed pods");
    }
    let layers = common::entries(&daemon.root().join("layers")).unwrap_or(0);
    assert_eq!(layers, 0, "writable layers of removed containers are left");
}

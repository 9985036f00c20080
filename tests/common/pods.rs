//! Pods and containers as kubelet drives them, for the tests that need some: a daemon
//! with busybox pulled, pod and container configs, the RPC sequences with the
//! assertions every caller would repeat, and HTTP traffic to and from pods.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crius::cri::api::*;
use crius::cri::client::CriClient;

use super::registry::Registry;
use super::{images, pull_image, Daemon};

/// A daemon with busybox pulled; returns the daemon, a client and the image name.
pub async fn daemon_with_busybox(registry: &Registry) -> (Daemon, CriClient, String) {
    registry.push(&images::busybox(), "busybox", "latest");
    let daemon = Daemon::for_registry(registry.addr(), "");
    let mut client = daemon.client().await;
    let image = registry.reference("busybox", "latest");
    pull_image(&mut client, &image, None).await.unwrap();
    (daemon, client, image)
}

pub fn pod_config(name: &str, log_directory: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: log_directory.display().to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Container as i32,
                    ..NamespaceOption::default()
                }),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    }
}

pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.to_string(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_string(),
            ..ImageSpec::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        ..ContainerConfig::default()
    }
}

/// `config` made privileged (all capabilities, no seccomp: it may mount and ptrace).
pub fn privileged(mut config: ContainerConfig) -> ContainerConfig {
    config.linux = Some(LinuxContainerConfig {
        security_context: Some(LinuxContainerSecurityContext {
            privileged: true,
            ..LinuxContainerSecurityContext::default()
        }),
        ..LinuxContainerConfig::default()
    });
    config
}

/// Defines, for each test body `name` (an async function taking a runtime handler's
/// name), a module `name` with one test per handler of the default config: `embedded`
/// (crius-oci, the default) and `runc` (Debian's runc).
#[macro_export]
macro_rules! on_each_handler {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name("embedded").await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn runc() {
                super::$name("runc").await
            }
        }
    )*};
}

/// Runs a pod with the default runtime handler.
pub async fn run_pod(client: &mut CriClient, config: &PodSandboxConfig) -> String {
    run_pod_on(client, config, "").await
}

/// Runs a pod with runtime handler `handler`.
pub async fn run_pod_on(
    client: &mut CriClient,
    config: &PodSandboxConfig,
    handler: &str,
) -> String {
    try_run_pod_on(client, config, handler).await.unwrap()
}

/// RunPodSandbox with the default handler, for tests that expect it to fail.
pub async fn try_run_pod(
    client: &mut CriClient,
    config: &PodSandboxConfig,
) -> Result<String, tonic::Status> {
    try_run_pod_on(client, config, "").await
}

async fn try_run_pod_on(
    client: &mut CriClient,
    config: &PodSandboxConfig,
    handler: &str,
) -> Result<String, tonic::Status> {
    client
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        })
        .await
        .map(|response| response.into_inner().pod_sandbox_id)
}

pub async fn create(
    client: &mut CriClient,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, tonic::Status> {
    client
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .map(|response| response.into_inner().container_id)
}

pub async fn start(client: &mut CriClient, id: &str) {
    client
        .runtime
        .start_container(StartContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .unwrap();
}

pub async fn status(client: &mut CriClient, id: &str) -> ContainerStatus {
    client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

/// Polls until the container has exited.
pub async fn wait_exited(client: &mut CriClient, id: &str) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = status(client, id).await;
        if current.state == ContainerState::ContainerExited as i32 {
            return current;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} did not exit: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn remove_pod(client: &mut CriClient, pod: &str) {
    client
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await
        .unwrap();
    client
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await
        .unwrap();
}

/// Runs `cmd` in the container and returns (exit code, stdout, stderr).
pub async fn exec(client: &mut CriClient, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let output = client
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    (
        output.exit_code,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `cmd` in the container and returns its stdout; panics unless it exits 0.
pub async fn exec_ok(client: &mut CriClient, id: &str, cmd: &[&str]) -> String {
    let (code, stdout, stderr) = exec(client, id, cmd).await;
    assert_eq!(code, 0, "{cmd:?} in {id}: {stderr}");
    stdout
}

/// The pod's status (verbose, so `info` carries the shim pid).
pub async fn pod_status(client: &mut CriClient, pod: &str) -> PodSandboxStatusResponse {
    client
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Creates and starts `container` in `pod`; its id.
pub async fn run_in_pod(
    client: &mut CriClient,
    pod: &str,
    config: &PodSandboxConfig,
    container: ContainerConfig,
) -> String {
    let id = create(client, pod, config, container).await.unwrap();
    start(client, &id).await;
    id
}

/// Runs a pod with one long-running container executing `command`; returns the pod and
/// container ids.
pub async fn run_pod_with(
    client: &mut CriClient,
    config: &PodSandboxConfig,
    image: &str,
    command: &[&str],
) -> (String, String) {
    let pod = run_pod(client, config).await;
    let name = config.metadata.as_ref().map_or("c", |m| m.name.as_str());
    let id = run_in_pod(client, &pod, config, container_config(name, image, command)).await;
    (pod, id)
}

/// Every pod the daemon lists.
pub async fn list_pods(client: &mut CriClient) -> Vec<PodSandbox> {
    client
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items
}

/// Every container the daemon lists.
pub async fn list_containers(client: &mut CriClient) -> Vec<Container> {
    client
        .runtime
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
}

/// The `info` JSON of the container's verbose status (pid, OCI spec, …).
pub async fn container_info(client: &mut CriClient, id: &str) -> serde_json::Value {
    let verbose = client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&verbose.info["info"]).unwrap()
}

/// GET `url` with busybox wget from inside container `id`; the body, trimmed.
pub async fn wget_in(client: &mut CriClient, id: &str, url: &str) -> String {
    exec_ok(client, id, &["wget", "-q", "-O", "-", url])
        .await
        .trim()
        .to_string()
}

/// busybox httpd serving `text` on port 8080 in the container.
pub fn http_server(text: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www"),
    ]
}

/// A command built as `String`s, as `run_pod_with` and `exec` take it.
pub fn argv(command: &[String]) -> Vec<&str> {
    command.iter().map(String::as_str).collect()
}

/// The address PodSandboxStatus reports.
pub fn pod_ip(status: &PodSandboxStatusResponse) -> Ipv4Addr {
    let ip = &status.status.as_ref().unwrap().network.as_ref().unwrap().ip;
    ip.parse().unwrap_or_else(|_| panic!("pod IP {ip:?}"))
}

/// NetworkReady's status and message, and the verbose network info.
pub async fn network_status(client: &mut CriClient) -> (bool, String, serde_json::Value) {
    let status = client
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let condition = status
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|condition| condition.r#type == "NetworkReady")
        .expect("a NetworkReady condition");
    let info = serde_json::from_str(&status.info["network"]).unwrap();
    (condition.status, condition.message, info)
}

//! The CRI contract of the foundation: Version, Status, RuntimeConfig and
//! UpdateRuntimeConfig as kubelet and crictl call them, UNIMPLEMENTED for everything else,
//! and the `crius version` / `crius info` verbs.

mod common;

use common::{run_binary, Daemon};
use crius::cri::api::*;
use tonic::Code;

const CRIUS: &str = env!("CARGO_BIN_EXE_crius");

#[tokio::test]
async fn version_names_crius_and_v1() {
    let daemon = Daemon::start();
    let version = daemon
        .client()
        .await
        .runtime
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "crius");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(version.version, "0.1.0");
}

#[tokio::test]
async fn status_reports_both_conditions_and_verbose_config() {
    let daemon = Daemon::start_with(
        "[registries.\"docker.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\nmirrors_only = true\n",
    );
    let mut client = daemon.client().await;
    let status = client
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status.info.is_empty(),
        "non-verbose Status must not carry info"
    );
    let conditions = status.status.unwrap().conditions;
    let condition = |name: &str| {
        conditions
            .iter()
            .find(|c| c.r#type == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .clone()
    };
    assert!(condition("RuntimeReady").status);
    // The built-in bridge network is up: kubelet may schedule pods here.
    assert!(condition("NetworkReady").status);
    let handlers: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|handler| handler.name.as_str())
        .collect();
    assert_eq!(
        handlers,
        ["", "embedded", "runc"],
        "the default handler and the default config's"
    );

    let verbose = client
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let config: serde_json::Value = serde_json::from_str(&verbose.info["config"]).unwrap();
    assert_eq!(config["listen"], daemon.socket().to_str().unwrap());
    assert_eq!(config["root"], daemon.root().to_str().unwrap());
    assert_eq!(
        config["registries"]["docker.io"]["mirrors"][0],
        "http://127.0.0.1:5000"
    );
    assert_eq!(config["registries"]["docker.io"]["mirrors_only"], true);
    let network: serde_json::Value = serde_json::from_str(&verbose.info["network"]).unwrap();
    assert_eq!(network["mode"], "bridge");
    assert_eq!(network["bridge"], daemon.network().bridge());
    assert_eq!(network["subnets"][0], daemon.network().subnet());
    assert!(daemon.network().bridge_exists());
}

#[tokio::test]
async fn without_a_pod_network_status_says_network_not_ready_and_why() {
    let daemon = Daemon::start_with("[network]\nmode = \"none\"\n");
    let mut client = daemon.client().await;
    let status = client
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("a NetworkReady condition");
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(network.message.contains("\"none\""), "{network:?}");
    let info: serde_json::Value = serde_json::from_str(&status.info["network"]).unwrap();
    assert_eq!(info["mode"], "none");
    assert!(
        !daemon.network().bridge_exists(),
        "mode none creates no bridge"
    );
}

#[tokio::test]
async fn runtime_config_reports_cgroupfs() {
    let daemon = Daemon::start();
    let config = daemon
        .client()
        .await
        .runtime
        .runtime_config(RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        config.linux.unwrap().cgroup_driver(),
        CgroupDriver::Cgroupfs
    );
}

#[tokio::test]
async fn update_runtime_config_stores_the_pod_cidr_and_rejects_bad_ones() {
    let daemon = Daemon::start();
    let mut client = daemon.client().await;
    let update = |cidr: &str| UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: cidr.to_string(),
            }),
        }),
    };
    client
        .runtime
        .update_runtime_config(update("10.244.3.0/24,fd00:10:244:3::/64"))
        .await
        .unwrap();
    let status = client
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let network: serde_json::Value = serde_json::from_str(&status.info["network"]).unwrap();
    assert_eq!(network["podCidr"], "10.244.3.0/24,fd00:10:244:3::/64");

    let err = client
        .runtime
        .update_runtime_config(update("10.244.3.0/40"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("runtime_config.network_config.pod_cidr"),
        "{}",
        err.message()
    );
    let err = client
        .runtime
        .update_runtime_config(UpdateRuntimeConfigRequest {
            runtime_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("runtime_config"),
        "{}",
        err.message()
    );

    // A rejected update leaves the last good value in place.
    let status = client
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let network: serde_json::Value = serde_json::from_str(&status.info["network"]).unwrap();
    assert_eq!(network["podCidr"], "10.244.3.0/24,fd00:10:244:3::/64");
}

/// Asserts that a call failed with UNIMPLEMENTED naming `rpc`.
fn assert_unimplemented<T: std::fmt::Debug>(rpc: &str, result: Result<T, tonic::Status>) {
    let status = result.expect_err(rpc);
    assert_eq!(status.code(), Code::Unimplemented, "{rpc}: {status:?}");
    assert!(
        status.message().contains(rpc),
        "{rpc}: message {:?} does not name it",
        status.message()
    );
}

#[tokio::test]
async fn every_other_rpc_answers_unimplemented_naming_itself() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut rt = client.runtime.clone();
    let mut img = client.image.clone();
    macro_rules! check {
        ($service:ident . $method:ident ( $request:ty ) = $rpc:literal) => {
            assert_unimplemented(
                $rpc,
                $service.$method(<$request>::default()).await.map(|_| ()),
            );
        };
    }
    check!(rt.stream_pod_sandboxes(StreamPodSandboxesRequest) = "StreamPodSandboxes");
    check!(rt.stream_containers(StreamContainersRequest) = "StreamContainers");
    check!(
        rt.update_container_resources(UpdateContainerResourcesRequest) = "UpdateContainerResources"
    );
    check!(rt.stream_container_stats(StreamContainerStatsRequest) = "StreamContainerStats");
    check!(rt.pod_sandbox_stats(PodSandboxStatsRequest) = "PodSandboxStats");
    check!(rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest) = "ListPodSandboxStats");
    check!(rt.stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) = "StreamPodSandboxStats");
    check!(rt.checkpoint_container(CheckpointContainerRequest) = "CheckpointContainer");
    check!(rt.get_container_events(GetEventsRequest) = "GetContainerEvents");
    check!(rt.list_metric_descriptors(ListMetricDescriptorsRequest) = "ListMetricDescriptors");
    check!(rt.list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) = "ListPodSandboxMetrics");
    check!(
        rt.stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) = "StreamPodSandboxMetrics"
    );
    check!(
        rt.update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) =
            "UpdatePodSandboxResources"
    );
    check!(img.stream_images(StreamImagesRequest) = "StreamImages");

    // The daemon is still healthy after all of that.
    rt.version(VersionRequest::default()).await.unwrap();
}

#[test]
fn cli_version_and_info_match_the_rpcs() {
    let daemon = Daemon::start();
    let address = daemon.address();
    let (status, stdout, stderr) = run_binary(CRIUS, &["--address", &address, "version"]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("RuntimeName:  crius"), "{stdout}");
    assert!(stdout.contains("RuntimeApiVersion:  v1"), "{stdout}");

    // The bare socket path works too, as crictl accepts it.
    let (status, stdout, stderr) = run_binary(
        CRIUS,
        &["--address", daemon.socket().to_str().unwrap(), "info"],
    );
    assert!(status.success(), "{stderr}");
    let info: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let conditions = info["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 2);
    assert_eq!(conditions[0]["type"], "RuntimeReady");
    assert_eq!(conditions[0]["status"], true);
    assert_eq!(conditions[1]["type"], "NetworkReady");
    assert_eq!(info["cgroupDriver"], "cgroupfs");
    assert_eq!(info["config"]["listen"], daemon.socket().to_str().unwrap());
}

#[test]
fn cli_without_a_daemon_prints_one_line_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix://{}/absent.sock", dir.path().display());
    let (status, stdout, stderr) = run_binary(CRIUS, &["--address", &address, "version"]);
    assert!(!status.success());
    assert!(stdout.is_empty());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("absent.sock") && stderr.contains("is criusd running?"),
        "{stderr}"
    );

    let (status, _, stderr) = run_binary(CRIUS, &["--address", "tcp://127.0.0.1:1", "info"]);
    assert!(!status.success());
    assert!(stderr.contains("unsupported address"), "{stderr}");
}

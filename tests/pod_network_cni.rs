//! Pod networking in CNI mode with Debian's reference plugins (containernetworking-plugins
//! in /usr/lib/cni: bridge, host-local, loopback, portmap) and small shell plugins the
//! tests write: one that records its environment and stdin, one that fails.
//!
//! Each test has its own conf dir, plugin dir and host-local data dir under a temp dir,
//! and the bridge and /24 of its daemon's test network slot: nothing touches the host's
//! /etc/cni/net.d or /var/lib/cni. The bridge plugin runs without `isGateway` (which would
//! turn on IP forwarding host-wide); the test creates the bridge with the gateway address.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::network::{free_port, http_get, TestNetwork};
use common::pods::*;
use common::registry::Registry;
use common::{images, pull_image, Daemon};
use crius::cri::api::*;
use crius::cri::client::CriClient;
use serde_json::{json, Value};
use tempfile::TempDir;
use tonic::Code;

/// The network name every test config uses.
const NETWORK: &str = "crius-test";

/// Where Debian installs the reference plugins.
const DEBIAN_CNI_BIN: &str = "/usr/lib/cni";

/// A test's CNI files: `conf/` (the daemon's conf dir), `bin/` (its own plugins, looked
/// up before Debian's), `ipam/` (host-local's data dir) and what the recorder wrote.
struct CniFiles {
    dir: TempDir,
}

/// One call the recorder plugin saw.
#[derive(Debug)]
struct Call {
    command: String,
    sandbox: String,
    netns: String,
    ifname: String,
    args: String,
}

impl CniFiles {
    fn new() -> CniFiles {
        let dir = tempfile::Builder::new()
            .prefix("crius-cni-test-")
            .tempdir()
            .unwrap();
        for sub in ["conf", "bin", "ipam", "calls"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let files = CniFiles { dir };
        files.write_plugin(
            "recorder",
            &format!(
                r#"input=$(cat)
calls={calls}
# stdin first: a test that sees the log line may read it at once.
printf '%s' "$input" > "$calls/$CNI_COMMAND-$CNI_CONTAINERID.json.tmp"
mv "$calls/$CNI_COMMAND-$CNI_CONTAINERID.json.tmp" "$calls/$CNI_COMMAND-$CNI_CONTAINERID.json"
printf '%s|%s|%s|%s|%s\n' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" >> "$calls/log"
# A chained plugin that changes nothing; first in its lists, it has no prevResult to pass on.
if [ "$CNI_COMMAND" = ADD ]; then printf '{{"cniVersion":"1.0.0"}}'; fi"#,
                calls = files.dir.path().join("calls").display()
            ),
        );
        files.write_plugin(
            "failer",
            r#"cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
    printf '{"cniVersion":"1.0.0","code":7,"msg":"the fabric is unreachable","details":"no route to 192.0.2.1"}'
    exit 1
fi"#,
        );
        files
    }

    fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("conf")
    }

    /// The daemon's `[network]` section for `mode`, on `slot`'s bridge and subnet.
    fn section(&self, mode: &str, slot: &TestNetwork) -> String {
        format!(
            "[network]\nmode = \"{mode}\"\nbridge = \"{}\"\nsubnet = \"{}\"\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"{}\", \"{DEBIAN_CNI_BIN}\"]\n",
            slot.bridge(),
            slot.subnet(),
            self.conf_dir().display(),
            self.dir.path().join("bin").display(),
        )
    }

    /// A shell script plugin named `name`.
    fn write_plugin(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("bin").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Writes the network config list `10-test.conflist` with `plugins`.
    fn write_list(&self, plugins: Vec<Value>) -> PathBuf {
        let path = self.conf_dir().join("10-test.conflist");
        let list = json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": plugins});
        std::fs::write(&path, serde_json::to_vec_pretty(&list).unwrap()).unwrap();
        path
    }

    /// The bridge plugin on `slot`'s bridge, host-local handing out `slot`'s subnet from
    /// `first_host` on.
    fn bridge_plugin(&self, slot: &TestNetwork, first_host: u8) -> Value {
        let prefix = slot.subnet().trim_end_matches("0/24").to_string();
        json!({
            "type": "bridge",
            "bridge": slot.bridge(),
            "ipam": {
                "type": "host-local",
                "dataDir": self.dir.path().join("ipam"),
                "ranges": [[{
                    "subnet": slot.subnet(),
                    "rangeStart": format!("{prefix}{first_host}"),
                    "gateway": slot.gateway(),
                }]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        })
    }

    /// Addresses host-local holds now.
    fn allocations(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("ipam").join(NETWORK)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.parse::<std::net::Ipv4Addr>().is_ok())
            .collect()
    }

    fn calls(&self) -> Vec<Call> {
        let log = std::fs::read_to_string(self.dir.path().join("calls/log")).unwrap_or_default();
        log.lines()
            .map(|line| {
                let fields: Vec<&str> = line.splitn(5, '|').collect();
                Call {
                    command: fields[0].to_string(),
                    sandbox: fields[1].to_string(),
                    netns: fields[2].to_string(),
                    ifname: fields[3].to_string(),
                    args: fields[4].to_string(),
                }
            })
            .collect()
    }

    /// What the recorder read on stdin for `command` of `sandbox`.
    fn stdin(&self, command: &str, sandbox: &str) -> Value {
        let path = self
            .dir
            .path()
            .join("calls")
            .join(format!("{command}-{sandbox}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        serde_json::from_str(&text).unwrap()
    }
}

fn recorder() -> Value {
    json!({"type": "recorder"})
}

fn loopback() -> Value {
    json!({"type": "loopback"})
}

/// A daemon in `mode` whose conf dir `files` fills through `plugins` (given the daemon's
/// test network slot; `None` leaves the conf dir empty). The slot's bridge is created
/// with its gateway address first unless the built-in network is to make it.
fn cni_daemon(
    files: &CniFiles,
    mode: &str,
    extra: &str,
    plugins: impl FnOnce(&TestNetwork) -> Option<Vec<Value>>,
) -> Daemon {
    Daemon::start_with_network(extra, |slot| {
        if let Some(plugins) = plugins(slot) {
            slot.create_bridge();
            files.write_list(plugins);
        }
        files.section(mode, slot)
    })
}

/// [`cni_daemon`] with busybox pulled from `registry`; returns the image name too.
async fn cni_daemon_with_busybox(
    registry: &Registry,
    files: &CniFiles,
    plugins: impl FnOnce(&TestNetwork) -> Option<Vec<Value>>,
) -> (Daemon, CriClient, String) {
    registry.push(&images::busybox(), "busybox", "latest");
    let extra = format!("[registries.\"{}\"]\ninsecure = true\n", registry.addr());
    let daemon = cni_daemon(files, "cni", &extra, plugins);
    let mut client = daemon.client().await;
    let image = registry.reference("busybox", "latest");
    pull_image(&mut client, &image, None).await.unwrap();
    (daemon, client, image)
}

async fn stop_pod(client: &mut CriClient, pod: &str) {
    client
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.to_string(),
        })
        .await
        .unwrap();
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that a failed RunPodSandbox left no pod, namespace, sandbox dir, CNI cache
/// entry, address or veth.
async fn assert_no_pod_left(daemon: &Daemon, client: &mut CriClient, files: &CniFiles) {
    let listed = client
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(listed.is_empty(), "{listed:?}");
    assert_eq!(entries(&daemon.state().join("netns")), Vec::<String>::new());
    assert_eq!(
        entries(&daemon.state().join("sandboxes")),
        Vec::<String>::new()
    );
    assert_eq!(entries(&daemon.root().join("cni")), Vec::<String>::new());
    assert_eq!(files.allocations(), Vec::<String>::new());
    assert_eq!(daemon.network().links_on_bridge(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_host_local_addresses_and_reach_each_other_through_the_bridge_plugin() {
    let registry = Registry::start();
    let files = CniFiles::new();
    let (daemon, mut client, image) = cni_daemon_with_busybox(&registry, &files, |slot| {
        Some(vec![recorder(), files.bridge_plugin(slot, 2), loopback()])
    })
    .await;
    let (ready, message, info) = network_status(&mut client).await;
    assert!(ready, "{message}");
    assert_eq!(info["mode"], "cni");
    assert_eq!(info["configuredMode"], "cni");
    assert_eq!(info["network"], NETWORK);
    assert_eq!(
        info["configFile"],
        files
            .conf_dir()
            .join("10-test.conflist")
            .display()
            .to_string()
    );
    assert_eq!(info["plugins"], json!(["recorder", "bridge", "loopback"]));

    // The server also has a host port: no plugin of this list maps ports, so criusd
    // relays it.
    let logs = tempfile::tempdir().unwrap();
    let host_port = free_port();
    let mut server_config = pod_config("server", logs.path());
    server_config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: i32::from(host_port),
        host_ip: "127.0.0.1".into(),
    }];
    let (server, _) = run_pod_with(
        &mut client,
        &server_config,
        &image,
        &argv(&http_server("from-server")),
    )
    .await;
    let (other, other_ctr) = run_pod_with(
        &mut client,
        &pod_config("client", logs.path()),
        &image,
        &["sleep", "1000"],
    )
    .await;

    let server_ip = pod_ip(&pod_status(&mut client, &server).await);
    let other_ip = pod_ip(&pod_status(&mut client, &other).await);
    let prefix = daemon
        .network()
        .subnet()
        .trim_end_matches("0/24")
        .to_string();
    assert!(server_ip.to_string().starts_with(&prefix), "{server_ip}");
    assert_ne!(server_ip, other_ip);
    let mut held = files.allocations();
    held.sort();
    let mut expected = vec![server_ip.to_string(), other_ip.to_string()];
    expected.sort();
    assert_eq!(held, expected, "host-local's allocations");
    assert_eq!(daemon.network().links_on_bridge().len(), 2);
    assert!(
        entries(&daemon.state().join("network/ipam")).is_empty(),
        "the built-in IPAM is not used in CNI mode"
    );

    // The plugins ran with the pod's identity, namespace and interface.
    let calls = files.calls();
    let add = calls
        .iter()
        .find(|call| call.command == "ADD" && call.sandbox == server)
        .unwrap_or_else(|| panic!("no ADD for {server}: {calls:?}"));
    assert_eq!(
        add.args,
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=server;K8S_POD_INFRA_CONTAINER_ID={server};K8S_POD_UID=uid-server")
    );
    assert_eq!(
        add.netns,
        daemon
            .state()
            .join("netns")
            .join(&server)
            .display()
            .to_string()
    );
    assert_eq!(add.ifname, "eth0");
    let stdin = files.stdin("ADD", &server);
    assert_eq!(stdin["name"], NETWORK);
    assert_eq!(stdin["cniVersion"], "1.0.0");
    assert!(stdin.get("prevResult").is_none(), "{stdin}");
    assert!(stdin.get("runtimeConfig").is_none(), "{stdin}");

    // Host to pod, pod to pod across the bridge, and the relayed host port.
    http_get(&format!("{server_ip}:8080"));
    assert_eq!(
        wget_in(
            &mut client,
            &other_ctr,
            &format!("http://{server_ip}:8080/")
        )
        .await,
        "from-server"
    );
    let (_, routes, _) = exec(&mut client, &other_ctr, &["ip", "route"]).await;
    assert!(
        routes.contains(&format!("default via {}", daemon.network().gateway())),
        "{routes}"
    );
    assert!(http_get(&format!("127.0.0.1:{host_port}")).contains("from-server"));

    // Stop runs DEL with the ADD result; it frees the address and the veth at once.
    stop_pod(&mut client, &server).await;
    let stdin = files.stdin("DEL", &server);
    let addresses = &stdin["prevResult"]["ips"];
    assert_eq!(
        addresses[0]["address"],
        format!("{server_ip}/24"),
        "{stdin}"
    );
    assert_eq!(files.allocations(), vec![other_ip.to_string()]);
    assert_eq!(daemon.network().links_on_bridge().len(), 1);
    remove_pod(&mut client, &server).await;
    remove_pod(&mut client, &other).await;
    assert!(files.allocations().is_empty());
    assert!(daemon.network().links_on_bridge().is_empty());
    assert!(entries(&daemon.root().join("cni")).is_empty());
    assert!(entries(&daemon.state().join("netns")).is_empty());
}

/// The rules the portmap plugin left in the host's nat table: its shared chains are
/// removed at the end if this test created them, so the host is left as it was found.
struct NatTable {
    had_portmap_chains: bool,
}

impl NatTable {
    const SHARED_CHAINS: [&str; 3] = [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-SETMARK",
        "CNI-HOSTPORT-MASQ",
    ];

    fn rules() -> String {
        let output = Command::new("iptables")
            .args(["-t", "nat", "-S"])
            .output()
            .expect("run iptables (Debian package iptables)");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn snapshot() -> NatTable {
        NatTable {
            had_portmap_chains: NatTable::rules().contains("-N CNI-HOSTPORT-DNAT"),
        }
    }
}

impl Drop for NatTable {
    fn drop(&mut self) {
        let rules = NatTable::rules();
        if self.had_portmap_chains || rules.contains("-N CNI-DN-") {
            return;
        }
        for rule in rules.lines().filter(|rule| {
            rule.starts_with("-A ")
                && NatTable::SHARED_CHAINS
                    .iter()
                    .any(|chain| rule.ends_with(&format!("-j {chain}")))
        }) {
            // `-A CHAIN args…` becomes `-D CHAIN args…`; comments are quoted, so go
            // through a shell.
            let delete = format!("iptables -t nat -D{}", &rule[2..]);
            let _ = Command::new("sh").args(["-c", &delete]).status();
        }
        for chain in NatTable::SHARED_CHAINS {
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-F", chain])
                .status();
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-X", chain])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_go_to_the_portmap_plugin_as_runtime_config() {
    let nat = NatTable::snapshot();
    let registry = Registry::start();
    let files = CniFiles::new();
    let (daemon, mut client, image) = cni_daemon_with_busybox(&registry, &files, |slot| {
        Some(vec![
            json!({"type": "recorder", "capabilities": {"portMappings": true}}),
            files.bridge_plugin(slot, 2),
            json!({"type": "portmap", "capabilities": {"portMappings": true}}),
        ])
    })
    .await;
    let logs = tempfile::tempdir().unwrap();
    let host_port = free_port();
    let mut config = pod_config("ported", logs.path());
    config.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 8080,
        host_port: i32::from(host_port),
        host_ip: String::new(),
    }];
    let (pod, _) = run_pod_with(&mut client, &config, &image, &argv(&http_server("mapped"))).await;

    // Exactly the plugins that declare the capability get it.
    let stdin = files.stdin("ADD", &pod);
    assert_eq!(
        stdin["runtimeConfig"],
        json!({"portMappings": [{"hostPort": host_port, "containerPort": 8080, "protocol": "tcp"}]})
    );
    assert!(NatTable::rules().contains(&format!("id: \\\"{pod}\\\"")));

    // The node's addresses reach the pod through portmap's DNAT rules, and criusd does
    // not hold the port itself.
    assert!(http_get(&format!("{}:{host_port}", daemon.network().gateway())).contains("mapped"));
    assert!(http_get(&format!("127.0.0.1:{host_port}")).contains("mapped"));
    drop(std::net::TcpListener::bind(("0.0.0.0", host_port)).expect("port not held by criusd"));

    // DEL gets the same mappings back from the cache: the pod's rules go.
    stop_pod(&mut client, &pod).await;
    assert_eq!(
        files.stdin("DEL", &pod)["runtimeConfig"],
        stdin["runtimeConfig"]
    );
    assert!(!NatTable::rules().contains(&pod), "{}", NatTable::rules());
    remove_pod(&mut client, &pod).await;
    assert!(files.allocations().is_empty());
    drop(daemon);
    drop(nat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_pods_are_checked_and_deleted_with_their_cached_config() {
    let files = CniFiles::new();
    let mut daemon = cni_daemon(&files, "cni", "", |slot| {
        Some(vec![recorder(), files.bridge_plugin(slot, 2), loopback()])
    });
    let mut client = daemon.client().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = run_pod(&mut client, &pod_config("survivor", logs.path())).await;
    let ip = pod_ip(&pod_status(&mut client, &pod).await);
    assert!(daemon
        .root()
        .join("cni")
        .join(format!("{pod}.json"))
        .exists());

    // The config breaks while criusd is down.
    daemon.stop();
    let list = files.conf_dir().join("10-test.conflist");
    std::fs::write(&list, "{\"cniVersion\": ").unwrap();
    daemon.spawn();
    let mut client = daemon.client().await;
    let (ready, message, _) = network_status(&mut client).await;
    assert!(!ready);
    assert!(message.contains(&list.display().to_string()), "{message}");

    // CHECK runs in the background after the restart, with the ADD result.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files
        .calls()
        .iter()
        .any(|call| call.command == "CHECK" && call.sandbox == pod)
    {
        assert!(
            Instant::now() < deadline,
            "no CHECK after the restart: {:?}",
            files.calls()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let check = files.stdin("CHECK", &pod);
    assert_eq!(check["prevResult"]["ips"][0]["address"], format!("{ip}/24"));
    assert_eq!(pod_ip(&pod_status(&mut client, &pod).await), ip);

    // Stop runs DEL from the cache: the broken file is never read for it.
    stop_pod(&mut client, &pod).await;
    let del = files.stdin("DEL", &pod);
    assert_eq!(del["name"], NETWORK);
    assert_eq!(del["prevResult"]["ips"][0]["address"], format!("{ip}/24"));
    assert!(files.allocations().is_empty());
    assert!(daemon.network().links_on_bridge().is_empty());
    assert!(entries(&daemon.root().join("cni")).is_empty());
    remove_pod(&mut client, &pod).await;
    let commands: Vec<String> = files.calls().into_iter().map(|call| call.command).collect();
    assert_eq!(commands, ["ADD", "CHECK", "DEL"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_or_a_missing_plugin_fails_naming_it_and_leaves_nothing() {
    let files = CniFiles::new();
    let daemon = cni_daemon(&files, "cni", "", |slot| {
        Some(vec![files.bridge_plugin(slot, 2)])
    });
    let mut client = daemon.client().await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("unlucky", logs.path());
    let list = files.conf_dir().join("10-test.conflist");
    let valid = std::fs::read(&list).unwrap();

    let broken = files.conf_dir().join("05-broken.conflist");
    std::fs::write(&broken, "{\"cniVersion\": \"1.0.0\", \"name\": ").unwrap();
    let (ready, message, info) = network_status(&mut client).await;
    assert!(!ready);
    assert!(message.contains(&broken.display().to_string()), "{message}");
    assert!(
        info["error"].as_str().unwrap().contains("05-broken"),
        "{info}"
    );
    let err = try_run_pod(&mut client, &config).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&broken.display().to_string()),
        "{err:?}"
    );
    assert_no_pod_left(&daemon, &mut client, &files).await;

    std::fs::remove_file(&broken).unwrap();
    let mut plugins: Value = serde_json::from_slice(&valid).unwrap();
    plugins["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "no-such-plugin"}));
    std::fs::write(&list, plugins.to_string()).unwrap();
    let (ready, message, _) = network_status(&mut client).await;
    assert!(!ready);
    assert!(
        message.contains("\"no-such-plugin\" not found"),
        "{message}"
    );
    let err = try_run_pod(&mut client, &config).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("no-such-plugin"), "{err:?}");
    assert_no_pod_left(&daemon, &mut client, &files).await;

    // Fixed while criusd runs: the next pod gets the network.
    std::fs::write(&list, &valid).unwrap();
    let (ready, message, _) = network_status(&mut client).await;
    assert!(ready, "{message}");
    let pod = run_pod(&mut client, &config).await;
    assert_eq!(files.allocations().len(), 1);
    remove_pod(&mut client, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_plugin_fails_with_its_message_and_leaves_nothing() {
    let files = CniFiles::new();
    let daemon = cni_daemon(&files, "cni", "", |slot| {
        Some(vec![
            files.bridge_plugin(slot, 2),
            loopback(),
            json!({"type": "failer"}),
        ])
    });
    let mut client = daemon.client().await;
    let logs = tempfile::tempdir().unwrap();
    let err = try_run_pod(&mut client, &pod_config("doomed", logs.path()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    for part in [
        "\"failer\"",
        NETWORK,
        "ADD",
        "the fabric is unreachable: no route to 192.0.2.1 (code 7)",
    ] {
        assert!(err.message().contains(part), "{part}: {err:?}");
    }
    // The bridge plugin had attached the pod: the DEL that undid the ADD freed it all.
    assert_no_pod_left(&daemon, &mut client, &files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_pod_whose_namespace_is_gone_succeeds() {
    let files = CniFiles::new();
    let daemon = cni_daemon(&files, "cni", "", |slot| {
        Some(vec![recorder(), files.bridge_plugin(slot, 2), loopback()])
    });
    let mut client = daemon.client().await;
    let logs = tempfile::tempdir().unwrap();
    let pod = run_pod(&mut client, &pod_config("vanishing", logs.path())).await;
    assert_eq!(files.allocations().len(), 1);
    // Something outside crius unpinned the namespace and deleted the pod's interface.
    let netns = daemon.state().join("netns").join(&pod);
    nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH).unwrap();
    for link in daemon.network().links_on_bridge() {
        let status = Command::new("ip").args(["link", "del", &link]).status();
        assert!(status.unwrap().success());
    }
    remove_pod(&mut client, &pod).await;
    let del = files
        .calls()
        .into_iter()
        .find(|call| call.command == "DEL")
        .expect("a DEL");
    assert_eq!(del.netns, "", "a namespace that is gone is passed as none");
    assert!(
        files.allocations().is_empty(),
        "host-local freed the address"
    );
    assert!(!netns.exists());
    assert!(entries(&daemon.root().join("cni")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_uses_cni_while_a_config_is_there_and_the_bridge_otherwise() {
    let files = CniFiles::new();
    let mut slot_plugins = Vec::new();
    let daemon = cni_daemon(&files, "auto", "", |slot| {
        // host-local hands out from .100 on, clear of the built-in IPAM's first addresses.
        slot_plugins = vec![files.bridge_plugin(slot, 100), loopback()];
        None
    });
    let mut client = daemon.client().await;
    let logs = tempfile::tempdir().unwrap();

    let (ready, message, info) = network_status(&mut client).await;
    assert!(ready, "{message}");
    assert_eq!(info["mode"], "bridge");
    assert_eq!(info["configuredMode"], "auto");
    let on_bridge = run_pod(&mut client, &pod_config("on-bridge", logs.path())).await;
    assert_eq!(daemon.ip_allocations().len(), 1);
    assert!(files.allocations().is_empty());

    // A CNI config appears (as a CNI DaemonSet installs one): new pods use it.
    files.write_list(slot_plugins);
    let (ready, message, info) = network_status(&mut client).await;
    assert!(ready, "{message}");
    assert_eq!(info["mode"], "cni");
    let on_cni = run_pod(&mut client, &pod_config("on-cni", logs.path())).await;
    let cni_ip = pod_ip(&pod_status(&mut client, &on_cni).await);
    assert_eq!(files.allocations(), vec![cni_ip.to_string()]);
    assert!(cni_ip.octets()[3] >= 100, "{cni_ip}");
    assert_eq!(daemon.ip_allocations().len(), 1);
    assert_eq!(daemon.network().links_on_bridge().len(), 2);

    // Each pod is torn down by what set it up.
    stop_pod(&mut client, &on_bridge).await;
    assert!(daemon.ip_allocations().is_empty());
    assert_eq!(daemon.network().links_on_bridge().len(), 1);
    stop_pod(&mut client, &on_cni).await;
    assert!(files.allocations().is_empty());
    assert!(daemon.network().links_on_bridge().is_empty());
    remove_pod(&mut client, &on_bridge).await;
    remove_pod(&mut client, &on_cni).await;

    // The config goes: back to the bridge.
    std::fs::remove_file(files.conf_dir().join("10-test.conflist")).unwrap();
    let (_, _, info) = network_status(&mut client).await;
    assert_eq!(info["mode"], "bridge");
}

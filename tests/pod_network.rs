//! Pod networking through the CRI: the built-in bridge, veth pairs and addresses, DNS
//! files, host ports (TCP and UDP, on 127.0.0.1 and the node's own address), restarts,
//! faults, and a churn test proving nothing leaks. Traffic only flows between this host
//! and the namespaces the tests create; each daemon has a bridge and /24 of its own.

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::network::{free_port, http_get, wait_until_free, OutsideNetwork};
use common::pods::*;
use common::registry::Registry;
use common::{images, pull_image, Daemon};
use crius::cri::api::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_addresses_and_reach_each_other_and_the_host_reaches_them() {
    let registry = Registry::start();
    let (daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();

    let mut server_config = pod_config("server", logs.path());
    server_config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let (server, server_ctr) = run_pod_with(
        &mut client,
        &server_config,
        &image,
        &argv(&http_server("from-server")),
    )
    .await;
    let client_config = pod_config("client", logs.path());
    let (other, other_ctr) =
        run_pod_with(&mut client, &client_config, &image, &["sleep", "1000"]).await;

    let server_ip = pod_ip(&pod_status(&mut client, &server).await);
    let other_ip = pod_ip(&pod_status(&mut client, &other).await);
    let prefix = daemon
        .network()
        .subnet()
        .trim_end_matches("0/24")
        .to_string();
    assert!(
        server_ip.to_string().starts_with(&prefix),
        "{server_ip} not in {prefix}0/24"
    );
    assert_ne!(server_ip, other_ip);
    assert_eq!(daemon.network().links_on_bridge().len(), 2);
    assert_eq!(daemon.ip_allocations().len(), 2);

    // Inside the pod: eth0 with the address, a default route via the bridge, DNS files.
    let (code, routes, _) = exec(&mut client, &server_ctr, &["ip", "route"]).await;
    assert_eq!(code, 0);
    assert!(
        routes.contains(&format!("default via {}", daemon.network().gateway())),
        "{routes}"
    );
    let (_, addresses, _) = exec(
        &mut client,
        &server_ctr,
        &["ip", "-4", "addr", "show", "eth0"],
    )
    .await;
    assert!(
        addresses.contains(&format!("inet {server_ip}/24")),
        "{addresses}"
    );
    let (_, hosts, _) = exec(&mut client, &server_ctr, &["cat", "/etc/hosts"]).await;
    assert!(
        hosts.contains(&format!("{server_ip}\tserver-host")),
        "{hosts}"
    );
    let (_, resolv, _) = exec(&mut client, &server_ctr, &["cat", "/etc/resolv.conf"]).await;
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");

    // Pod to pod across the bridge, and host to pod.
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

    // Stop releases the veth and the address at once; a second Stop is fine.
    client
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: server.clone(),
        })
        .await
        .unwrap();
    assert_eq!(daemon.network().links_on_bridge().len(), 1);
    assert_eq!(daemon.ip_allocations().len(), 1);
    remove_pod(&mut client, &server).await;
    remove_pod(&mut client, &other).await;
    assert!(daemon.network().links_on_bridge().is_empty());
    let netns = common::entries(&daemon.state().join("netns")).unwrap();
    assert_eq!(netns, 0, "pinned network namespaces left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_ports_relay_tcp_and_udp_and_survive_a_daemon_restart() {
    let registry = Registry::start();
    let (mut daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let (tcp_port, udp_port) = (free_port(), free_port());
    let mut config = pod_config("ported", logs.path());
    config.port_mappings = vec![
        PortMapping {
            protocol: Protocol::Tcp as i32,
            container_port: 8080,
            host_port: i32::from(tcp_port),
            host_ip: String::new(),
        },
        PortMapping {
            protocol: Protocol::Udp as i32,
            container_port: 5353,
            host_port: i32::from(udp_port),
            host_ip: "127.0.0.1".into(),
        },
    ];
    let (pod, _) = run_pod_with(
        &mut client,
        &config,
        &image,
        &argv(&http_server("via-host-port")),
    )
    .await;

    // On 127.0.0.1 and on the node's own address (the bridge's, here).
    assert!(http_get(&format!("127.0.0.1:{tcp_port}")).contains("via-host-port"));
    let node_address = daemon.network().gateway();
    assert!(http_get(&format!("{node_address}:{tcp_port}")).contains("via-host-port"));

    // UDP: an echo server in the pod's namespace, started by this test on a thread of its own.
    let echo = udp_echo_in_netns(daemon.state().join("netns").join(&pod), 5353);
    assert_eq!(udp_round_trip(udp_port, b"ping"), b"ping");

    // A second pod asking for a port in use fails naming it, and leaves nothing.
    let mut clash = pod_config("clash", logs.path());
    clash.port_mappings = vec![PortMapping {
        protocol: Protocol::Tcp as i32,
        container_port: 80,
        host_port: i32::from(tcp_port),
        host_ip: String::new(),
    }];
    let err = try_run_pod(&mut client, &clash).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&format!("host port {tcp_port}/tcp")),
        "{err:?}"
    );
    assert_eq!(daemon.network().links_on_bridge().len(), 1);
    assert_eq!(daemon.ip_allocations().len(), 1);

    // criusd restarts: the pod keeps its ports.
    daemon.stop();
    daemon.spawn();
    let mut client = daemon.client().await;
    assert!(http_get(&format!("127.0.0.1:{tcp_port}")).contains("via-host-port"));
    assert_eq!(udp_round_trip(udp_port, b"again"), b"again");

    // Stop frees the ports.
    client
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
    wait_until_free(tcp_port);
    UdpSocket::bind(("127.0.0.1", udp_port)).expect("UDP host port freed after stop");
    echo.join().unwrap();
    remove_pod(&mut client, &pod).await;
}

/// A UDP echo server in the pod's network namespace (pinned at `netns`), on a thread
/// of its own that entered it; it answers two datagrams (before and after a restart).
fn udp_echo_in_netns(netns: std::path::PathBuf, port: u16) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let netns = std::fs::File::open(netns).unwrap();
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = UdpSocket::bind(("0.0.0.0", port)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buffer = [0u8; 512];
        for _ in 0..2 {
            let Ok((length, peer)) = socket.recv_from(&mut buffer) else {
                return;
            };
            socket.send_to(&buffer[..length], peer).unwrap();
        }
    });
    ready_rx.recv().unwrap();
    handle
}

fn udp_round_trip(port: u16, payload: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(payload, ("127.0.0.1", port)).unwrap();
    let mut buffer = [0u8; 512];
    let (length, _) = socket
        .recv_from(&mut buffer)
        .expect("a UDP answer through the host port");
    buffer[..length].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_subnet_fails_naming_it_and_leaves_nothing() {
    let registry = Registry::start();
    registry.push(&images::busybox(), "busybox", "latest");
    // A /30 holds the network, the gateway, one pod and the broadcast address.
    let daemon = Daemon::start_with_network(
        &format!("[registries.\"{}\"]\ninsecure = true\n", registry.addr()),
        |network| {
            format!(
                "[network]\nmode = \"bridge\"\nbridge = \"{}\"\nsubnet = \"{}\"\n",
                network.bridge(),
                network.subnet().replace("0/24", "0/30")
            )
        },
    );
    let mut client = daemon.client().await;
    pull_image(&mut client, &registry.reference("busybox", "latest"), None)
        .await
        .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let first = run_pod(&mut client, &pod_config("first", logs.path())).await;
    let err = try_run_pod(&mut client, &pod_config("second", logs.path()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let subnet = daemon.network().subnet().replace("0/24", "0/30");
    assert!(err.message().contains(&subnet), "{err:?}");
    let listed = list_pods(&mut client).await;
    assert_eq!(listed.len(), 1, "the failed pod must not be listed");
    assert_eq!(common::entries(&daemon.state().join("netns")).unwrap(), 1);
    assert_eq!(
        common::entries(&daemon.state().join("sandboxes")).unwrap(),
        1
    );

    // Once the first pod stops, its address is free for the next.
    remove_pod(&mut client, &first).await;
    let third = run_pod(&mut client, &pod_config("third", logs.path())).await;
    remove_pod(&mut client, &third).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_pod_whose_namespace_is_gone_succeeds() {
    let registry = Registry::start();
    let (daemon, mut client, _image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let pod = run_pod(&mut client, &pod_config("vanishing", logs.path())).await;
    // Something outside crius deleted the pod's interface and its pinned namespace.
    let netns = daemon.state().join("netns").join(&pod);
    nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH).unwrap();
    for link in daemon.network().links_on_bridge() {
        std::process::Command::new("ip")
            .args(["link", "del", &link])
            .status()
            .unwrap();
    }
    remove_pod(&mut client, &pod).await;
    assert!(!netns.exists());
    assert!(daemon.ip_allocations().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_not_handed_out_twice_across_a_restart() {
    let registry = Registry::start();
    let (mut daemon, mut client, _image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let before = run_pod(&mut client, &pod_config("before", logs.path())).await;
    let before_ip = pod_ip(&pod_status(&mut client, &before).await);
    daemon.stop_with(nix::sys::signal::Signal::SIGKILL);
    daemon.spawn();
    let mut client = daemon.client().await;
    let after = run_pod(&mut client, &pod_config("after", logs.path())).await;
    let after_ip = pod_ip(&pod_status(&mut client, &after).await);
    assert_ne!(before_ip, after_ip);
    assert_eq!(pod_ip(&pod_status(&mut client, &before).await), before_ip);
    remove_pod(&mut client, &before).await;
    remove_pod(&mut client, &after).await;
}

/// 200 pods created and removed one after another leave no namespace, veth, address,
/// mount or process behind (the harness checks mounts and processes at teardown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pod_cycles_leak_nothing() {
    // With masquerade on: its rules are per subnet, so churn must not change them.
    let daemon =
        Daemon::start_with_network("", |slot| format!("{}masquerade = true\n", slot.config()));
    let mut client = daemon.client().await;
    // Answered once criusd has set up the network (the socket is bound before that).
    network_status(&mut client).await;
    let rules = daemon.network().list_masquerade_table();
    assert!(rules.is_some(), "no masquerade table");
    let logs = tempfile::tempdir().unwrap();
    for cycle in 0..200 {
        let pod = run_pod(
            &mut client,
            &pod_config(&format!("churn-{cycle}"), logs.path()),
        )
        .await;
        remove_pod(&mut client, &pod).await;
    }
    assert_eq!(daemon.network().list_masquerade_table(), rules);
    assert!(daemon.network().links_on_bridge().is_empty());
    assert!(daemon.ip_allocations().is_empty());
    assert_eq!(common::entries(&daemon.state().join("netns")).unwrap(), 0);
    assert_eq!(
        common::entries(&daemon.state().join("sandboxes")).unwrap(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_network_pod_gets_no_address_and_its_containers_use_the_nodes_network() {
    let registry = Registry::start();
    let (daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let mut config = pod_config("on-host", logs.path());
    config.hostname = String::new();
    let options = config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
        .and_then(|security| security.namespace_options.as_mut())
        .unwrap();
    options.network = NamespaceMode::Node as i32;
    // The container leaves its namespace options unset, as critest and some kubelets do.
    let (pod, container) = run_pod_with(&mut client, &config, &image, &["sleep", "1000"]).await;
    let status = pod_status(&mut client, &pod).await;
    assert_eq!(status.status.unwrap().network.unwrap().ip, "");
    assert!(daemon.network().links_on_bridge().is_empty());
    let (_, netns, _) = exec(&mut client, &container, &["readlink", "/proc/self/ns/net"]).await;
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(netns.trim(), host.to_string_lossy());
    remove_pod(&mut client, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_stack_pods_get_an_ipv6_address_too_and_talk_over_it() {
    let registry = Registry::start();
    registry.push(&images::busybox(), "busybox", "latest");
    let daemon = Daemon::start_with_network(
        &format!("[registries.\"{}\"]\ninsecure = true\n", registry.addr()),
        |network| format!("{}subnet6 = \"{}\"\n", network.config(), network.subnet6()),
    );
    let mut client = daemon.client().await;
    let image = registry.reference("busybox", "latest");
    pull_image(&mut client, &image, None).await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (server, server_ctr) = run_pod_with(
        &mut client,
        &pod_config("server6", logs.path()),
        &image,
        &argv(&http_server("over-ipv6")),
    )
    .await;
    let (other, other_ctr) = run_pod_with(
        &mut client,
        &pod_config("client6", logs.path()),
        &image,
        &["sleep", "1000"],
    )
    .await;

    let status = pod_status(&mut client, &server).await.status.unwrap();
    let network = status.network.unwrap();
    let ip6: std::net::Ipv6Addr = network.additional_ips[0].ip.parse().unwrap();
    let subnet6 = daemon.network().subnet6();
    let network6: std::net::Ipv6Addr = subnet6.trim_end_matches("/64").parse().unwrap();
    assert_eq!(
        ip6.segments()[..4],
        network6.segments()[..4],
        "{ip6} not in {subnet6}"
    );
    assert!(
        network.ip.parse::<Ipv4Addr>().is_ok(),
        "the IPv4 address stays the primary one"
    );
    let (_, addresses, _) = exec(
        &mut client,
        &server_ctr,
        &["ip", "-6", "addr", "show", "eth0"],
    )
    .await;
    assert!(addresses.contains(&format!("{ip6}/64")), "{addresses}");
    let (_, hosts, _) = exec(&mut client, &server_ctr, &["cat", "/etc/hosts"]).await;
    assert!(hosts.contains(&format!("{ip6}\tserver6-host")), "{hosts}");

    // Host to pod, and pod to pod, over IPv6.
    http_get(&format!("[{ip6}]:8080"));
    assert_eq!(
        wget_in(&mut client, &other_ctr, &format!("http://[{ip6}]:8080/")).await,
        "over-ipv6"
    );
    assert_eq!(daemon.ip_allocations().len(), 4, "two addresses per pod");
    remove_pod(&mut client, &server).await;
    remove_pod(&mut client, &other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masquerade_lets_pods_reach_beyond_the_node_and_goes_when_turned_off() {
    let registry = Registry::start();
    registry.push(&images::busybox(), "busybox", "latest");
    let registry_config = format!("[registries.\"{}\"]\ninsecure = true\n", registry.addr());
    let mut daemon = Daemon::start_with_network(&registry_config, |slot| {
        format!("{}masquerade = true\n", slot.config())
    });
    let outside = OutsideNetwork::create(daemon.network(), "from-outside");
    let mut client = daemon.client().await;
    let image = registry.reference("busybox", "latest");
    pull_image(&mut client, &image, None).await.unwrap();

    // One rule for the subnet, leaving out what stays on the bridge.
    let table = daemon
        .network()
        .list_masquerade_table()
        .expect("masquerade table");
    assert!(
        table.contains(&format!("ip saddr {}", daemon.network().subnet())),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "oifname != \"{}\" masquerade",
            daemon.network().bridge()
        )),
        "{table}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    let (_, _, network) = network_status(&mut client).await;
    assert_eq!(
        network["masquerade"],
        format!("inet {}", daemon.network().masquerade_table())
    );

    let logs = tempfile::tempdir().unwrap();
    let (pod, ctr) = run_pod_with(
        &mut client,
        &pod_config("egress", logs.path()),
        &image,
        &["sleep", "1000"],
    )
    .await;
    // (busybox's own `wget -T` crashes: `timeout` bounds the attempt instead.)
    let url = outside.url();
    let fetch_outside = ["timeout", "3", "wget", "-q", "-O", "-", &url];
    let (code, body, stderr) = exec(&mut client, &ctr, &fetch_outside).await;
    assert_eq!((code, body.trim()), (0, "from-outside"), "{stderr}");

    // Off: the next start removes crius's table, and the outside cannot answer the pod.
    daemon.stop();
    let config = std::fs::read_to_string(daemon.config_path()).unwrap();
    std::fs::write(
        daemon.config_path(),
        config.replace("masquerade = true", "masquerade = false"),
    )
    .unwrap();
    daemon.spawn();
    let mut client = daemon.client().await;
    assert_eq!(
        network_status(&mut client).await.2["masquerade"],
        serde_json::Value::Null
    );
    assert_eq!(
        daemon.network().list_masquerade_table(),
        None,
        "{}",
        daemon.logs()
    );
    let (code, _, stderr) = exec(&mut client, &ctr, &fetch_outside).await;
    assert_eq!(
        code, 143,
        "{url} unmasqueraded: no answer, so `timeout` ends wget: {stderr}"
    );
    remove_pod(&mut client, &pod).await;
}

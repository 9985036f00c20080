//! The Docker-style container verbs of the `crius` CLI against a real daemon, registry and
//! runc: run (detached and in the foreground, with its options reaching the container
//! and its cgroup), ps, pods, logs, exec, stop, start, rm, container prune and inspect,
//! names and id prefixes, and the errors a user meets. Every test removes what it made
//! through the CLI itself, and the harness asserts that no mount or process is left.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::images;
use common::network::{free_port, http_get, wait_until_free};
use common::registry::Registry;
use common::Daemon;
use crius::cri::api::*;
use crius::cri::client::CriClient;

const CRIUS: &str = env!("CARGO_BIN_EXE_crius");

/// What one CLI invocation left: exit code, stdout, stderr.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The CLI pointed at one daemon, with pod logs under the daemon's directory.
struct Cli<'a> {
    daemon: &'a Daemon,
    log_dir: PathBuf,
    image: String,
}

impl Cli<'_> {
    /// A daemon serving `registry`, which holds busybox; busybox is not pulled yet.
    fn new<'a>(daemon: &'a Daemon, registry: &Registry) -> Cli<'a> {
        Cli {
            daemon,
            log_dir: daemon.dir().join("pod-logs"),
            image: registry.reference("busybox", "latest"),
        }
    }

    fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        self.execute(args, env, None)
    }

    /// Runs a verb with `input` on its stdin.
    fn run_with_input(&self, args: &[&str], input: &str) -> Ran {
        self.execute(args, &[], Some(input))
    }

    fn execute(&self, args: &[&str], env: &[(&str, &str)], input: Option<&str>) -> Ran {
        let mut child = Command::new(CRIUS)
            .arg("--address")
            .arg(self.daemon.address())
            .args(args)
            .env_remove("CRIUS_ADDRESS")
            .env("CRIUS_LOG_DIR", &self.log_dir)
            .envs(env.iter().copied())
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run crius");
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input.as_bytes())
                .expect("write crius's stdin");
        }
        let output = child.wait_with_output().expect("wait for crius");
        Ran {
            code: output.status.code().expect("crius exited by a signal"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Ran {
        self.run_with_env(args, &[])
    }

    /// Runs a verb that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args);
        assert_eq!(ran.code, 0, "crius {args:?}: {}", ran.stderr);
        ran.stdout
    }

    /// Runs a verb that must fail with a one-line error; that line.
    fn fails(&self, args: &[&str]) -> String {
        let ran = self.run(args);
        assert_ne!(ran.code, 0, "crius {args:?} succeeded: {}", ran.stdout);
        assert_eq!(
            ran.stderr.trim().lines().count(),
            1,
            "crius {args:?}: one line expected: {}",
            ran.stderr
        );
        ran.stderr
    }

    /// The output of `crius logs` once its stdout and stderr contain what is wanted (the
    /// shim copies the two streams on threads of their own: either may come first).
    fn wait_for_log(&self, container: &str, stdout: &str, stderr: &str) -> Ran {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ran = self.run(&["logs", container]);
            if ran.stdout.contains(stdout) && ran.stderr.contains(stderr) {
                return ran;
            }
            assert!(
                Instant::now() < deadline,
                "{stdout:?} and {stderr:?} never came: {} / {}",
                ran.stdout,
                ran.stderr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asserts that no container, pod or pod log directory is left.
    fn assert_all_removed(&self) {
        assert_eq!(self.ok(&["ps", "-aq"]), "");
        assert_eq!(self.ok(&["pods", "-q"]), "");
        let logs_left = std::fs::read_dir(&self.log_dir)
            .map(|dir| dir.count())
            .unwrap_or(0);
        assert_eq!(logs_left, 0, "pod log directories left");
    }
}

fn registry_with_busybox() -> Registry {
    let registry = Registry::start();
    registry.push(&images::busybox(), "busybox", "latest");
    registry
}

/// The row of a table whose cells include `cell`.
fn row_with<'a>(table: &'a str, cell: &str) -> &'a str {
    table
        .lines()
        .find(|line| line.split("   ").any(|c| c.trim() == cell))
        .unwrap_or_else(|| panic!("no row with {cell:?} in:\n{table}"))
}

#[test]
fn a_detached_container_through_ps_logs_exec_stop_start_and_rm() {
    let registry = registry_with_busybox();
    let daemon = Daemon::for_registry(registry.addr(), "");
    let cli = Cli::new(&daemon, &registry);

    let script = "echo started; echo warming >&2; while true; do sleep 0.1; done";
    let ran = cli.run(&["run", "-d", "--name", "web", &cli.image, "sh", "-c", script]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("Unable to find image") && ran.stderr.contains("Pull complete"),
        "the missing image is pulled with progress: {}",
        ran.stderr
    );
    let id = ran.stdout.trim().to_string();
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    let short = &id[..13];

    let table = cli.ok(&["ps"]);
    let header = table.lines().next().unwrap();
    for column in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAME",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = row_with(&table, "web");
    assert!(row.starts_with(short), "{row}");
    assert!(row.contains(&cli.image), "{row}");
    assert!(row.contains("\"sh -c echo started;…\""), "{row}");
    assert!(row.contains(" ago") && row.contains("Up "), "{row}");
    assert_eq!(cli.ok(&["ps", "-q"]), format!("{short}\n"));
    let pods = cli.ok(&["pods"]);
    assert!(pods.starts_with("POD ID"), "{pods}");
    let pod_row = row_with(&pods, "web");
    assert!(
        pod_row.contains("Ready") && pod_row.contains("crius"),
        "{pod_row}"
    );

    let logs = cli.wait_for_log("web", "started", "warming");
    assert_eq!(logs.stdout, "started\n");
    assert_eq!(logs.stderr, "warming\n", "stderr lines go to stderr");

    let exec = cli.run(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo $((1 + 2)) $(hostname); echo oops >&2; exit 4",
    ]);
    assert_eq!(
        (exec.code, exec.stdout.as_str(), exec.stderr.as_str()),
        (4, "3 web\n", "oops\n")
    );
    assert_eq!(
        cli.ok(&["exec", &id[..8], "echo", "-n", "by-prefix"]),
        "by-prefix"
    );
    // -i: this stdin to its end; -t: a terminal (none here to put in raw mode).
    let typed = cli.run_with_input(&["exec", "-i", "web", "tr", "a-z", "A-Z"], "typed\n");
    assert_eq!(
        (typed.code, typed.stdout.as_str()),
        (0, "TYPED\n"),
        "{}",
        typed.stderr
    );
    let on_tty = cli.run(&["exec", "-t", "web", "sh", "-c", "[ -t 1 ] && echo tty"]);
    assert_eq!(
        (on_tty.code, on_tty.stdout.trim()),
        (0, "tty"),
        "{}",
        on_tty.stderr
    );
    // attach: the output from then on, each stream to its own, and the exit code.
    cli.ok(&[
        "run",
        "-d",
        "--name",
        "late",
        &cli.image,
        "sh",
        "-c",
        "sleep 1; echo late; echo oops >&2; exit 5",
    ]);
    let attached = cli.run(&["attach", "late"]);
    assert_eq!(
        (
            attached.code,
            attached.stdout.as_str(),
            attached.stderr.as_str()
        ),
        (5, "late\n", "oops\n")
    );
    assert_eq!(cli.ok(&["rm", "late"]), "late\n");

    // Running: rm refuses without -f.
    let refused = cli.fails(&["rm", "web"]);
    assert!(
        refused.contains("running") && refused.contains("rm -f"),
        "{refused}"
    );

    // sh as PID 1 ignores SIGTERM: SIGKILL after the timeout.
    let started = Instant::now();
    assert_eq!(cli.ok(&["stop", "-t", "1", "web"]), "web\n");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(cli.ok(&["ps", "-q"]), "");
    let all = cli.ok(&["ps", "-a"]);
    assert!(row_with(&all, "web").contains("Exited (137) "), "{all}");
    let refused = cli.fails(&["exec", "web", "true"]);
    assert!(refused.contains("not running"), "{refused}");

    // Started again: the next attempt, same name and log.
    let restarted = cli.ok(&["start", "web"]);
    let new_id = restarted.trim();
    assert_eq!(new_id.len(), 64, "{restarted}");
    assert_ne!(new_id, id);
    assert!(row_with(&cli.ok(&["ps"]), "web").contains("Up "));
    cli.wait_for_log("web", "started\nstarted\n", "warming\nwarming\n");
    let inspected: serde_json::Value = serde_json::from_str(&cli.ok(&["inspect", "web"])).unwrap();
    assert_eq!(inspected["status"]["id"], new_id);
    assert_eq!(inspected["status"]["metadata"]["attempt"], 1);
    assert_eq!(cli.ok(&["start", "web"]).trim(), new_id, "running: no-op");

    assert_eq!(cli.ok(&["rm", "-f", "web"]), "web\n");
    cli.assert_all_removed();
    let gone = cli.fails(&["logs", "web"]);
    assert_eq!(gone.trim(), "crius: no such container: web");
}

#[test]
fn a_foreground_run_prints_the_output_and_returns_the_exit_code() {
    let registry = registry_with_busybox();
    let daemon = Daemon::for_registry(registry.addr(), "");
    let cli = Cli::new(&daemon, &registry);

    let ran = cli.run(&[
        "run",
        "--rm",
        &cli.image,
        "sh",
        "-c",
        "echo out; echo err >&2; sleep 0.3; echo late; exit 3",
    ]);
    assert_eq!(ran.code, 3, "{}", ran.stderr);
    assert_eq!(ran.stdout, "out\nlate\n");
    assert!(ran.stderr.ends_with("\nerr\n"), "{}", ran.stderr);
    cli.assert_all_removed();

    // A line longer than the shim's record (16 KiB) comes back whole, and options after
    // the image belong to the command.
    let ran = cli.run(&[
        "run",
        "--rm",
        &cli.image,
        "sh",
        "-c",
        "head -c 40000 /dev/zero | tr '\\0' a; echo; echo -d --name x",
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.stdout, format!("{}\n-d --name x\n", "a".repeat(40000)));
    let ran = cli.run(&["run", "--rm", &cli.image, "echo", "-d", "--name", "x"]);
    assert_eq!(ran.stdout, "-d --name x\n", "{}", ran.stderr);

    // Without --rm the exited containers stay, until pruned.
    let ran = cli.run(&["run", "--name", "first", &cli.image, "true"]);
    assert_eq!((ran.code, ran.stdout.as_str()), (0, ""), "{}", ran.stderr);
    let ran = cli.run(&["run", &cli.image, "sh", "-c", "exit 300"]);
    assert_eq!(ran.code, 44, "300 is 44 to a shell: {}", ran.stderr);
    let running = cli.ok(&["run", "-d", "--name", "keeps", &cli.image, "sleep", "1000"]);
    let all = cli.ok(&["ps", "-a"]);
    assert!(row_with(&all, "first").contains("Exited (0) "), "{all}");
    let generated = all
        .lines()
        .find(|line| line.contains("Exited (44)"))
        .and_then(|line| line.split_whitespace().last())
        .unwrap_or_else(|| panic!("{all}"));
    assert!(
        generated.contains('_') && generated != "first",
        "a Docker-style generated name: {generated}"
    );
    assert_eq!(cli.ok(&["pods", "-q"]).lines().count(), 3);
    let pruned = cli.ok(&["container", "prune"]);
    assert!(pruned.starts_with("Deleted Containers:\n"), "{pruned}");
    assert_eq!(pruned.lines().count(), 3, "{pruned}");
    assert_eq!(cli.ok(&["ps", "-aq"]), format!("{}\n", &running[..13]));
    assert_eq!(cli.ok(&["pods", "-q"]).lines().count(), 1);
    assert_eq!(cli.ok(&["container", "prune"]), "");

    assert_eq!(cli.ok(&["rm", "-f", "keeps"]), "keeps\n");
    cli.assert_all_removed();
}

#[test]
fn run_options_reach_the_container_and_its_cgroup() {
    let registry = registry_with_busybox();
    let daemon = Daemon::for_registry(registry.addr(), "");
    let cli = Cli::new(&daemon, &registry);
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("file"), "from the host\n").unwrap();
    let volume = shared.path().display().to_string();

    let ran = cli.run_with_env(
        &[
            "run",
            "--rm",
            "-e",
            "GREETING=hello there",
            "-e",
            "FROM_HOST",
            "-w",
            "/tmp",
            "-u",
            "nobody",
            "-v",
            &format!("{volume}:/data:ro"),
            &cli.image,
            "sh",
            "-c",
            "echo $GREETING/$FROM_HOST; pwd; id -u; cat /data/file; \
             touch /data/new 2>/dev/null && echo writable || echo read-only",
        ],
        &[("FROM_HOST", "passed")],
    );
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        ran.stdout,
        "hello there/passed\n/tmp\n65534\nfrom the host\nread-only\n"
    );

    let ran = cli.run(&[
        "run",
        "--rm",
        "-u",
        "1000:1001",
        &cli.image,
        "sh",
        "-c",
        "id -u; id -g",
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.stdout, "1000\n1001\n");
    let ran = cli.run(&[
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/data"),
        &cli.image,
        "sh",
        "-c",
        "echo written > /data/new",
    ]);
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(
        std::fs::read_to_string(shared.path().join("new")).unwrap(),
        "written\n"
    );

    cli.ok(&[
        "run", "-d", "--name", "limited", "--memory", "64m", "--cpus", "1.5", &cli.image, "sleep",
        "1000",
    ]);
    let inspected: serde_json::Value =
        serde_json::from_str(&cli.ok(&["inspect", "limited"])).unwrap();
    assert_eq!(inspected["status"]["state"], "CONTAINER_RUNNING");
    assert_eq!(inspected["status"]["metadata"]["name"], "limited");
    let cgroup = inspected["info"]["runtimeSpec"]["linux"]["cgroupsPath"]
        .as_str()
        .unwrap_or_else(|| panic!("no cgroupsPath: {inspected:#}"))
        .trim_start_matches('/')
        .to_string();
    let read = |controller: &str, file: &str| {
        let path = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&cgroup)
            .join(file);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
            .trim()
            .to_string()
    };
    assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "150000");
    assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");

    // Bad options are usage errors (exit 2), before anything is created.
    let refused = cli.run(&["run", "--memory", "1x", &cli.image]);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("--memory"), "{}", refused.stderr);
    let refused = cli.run(&["run", "-v", "relative:/data", &cli.image]);
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("absolute"), "{}", refused.stderr);
    assert_eq!(cli.ok(&["rm", "-f", "limited"]), "limited\n");
    cli.assert_all_removed();
}

/// The body of busybox httpd's answer to GET / on `addr`, retried while it starts.
fn http_body(addr: &str) -> String {
    let answer = http_get(addr);
    match answer.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => panic!("no body from {addr}: {answer:?}"),
    }
}

#[test]
fn published_ports_reach_the_container_until_it_is_removed() {
    let registry = registry_with_busybox();
    let daemon = Daemon::for_registry(registry.addr(), "");
    let cli = Cli::new(&daemon, &registry);
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8080");
    let server = "mkdir /www; echo hi > /www/index.html; exec httpd -f -p 8080 -h /www";
    cli.ok(&[
        "run", "-d", "--name", "web", "-p", &publish, "-p", "5353/udp", &cli.image, "sh", "-c",
        server,
    ]);
    assert_eq!(http_body(&format!("127.0.0.1:{port}")), "hi\n");

    // `port` lists both, the UDP one on a host port picked for it, which the pod holds.
    let listed = cli.ok(&["port", "web"]);
    let lines: Vec<&str> = listed.lines().collect();
    let [udp, tcp] = lines.as_slice() else {
        panic!("two mappings expected: {listed}");
    };
    assert_eq!(*tcp, format!("8080/tcp -> 127.0.0.1:{port}"));
    let udp_port: u16 = udp
        .strip_prefix("5353/udp -> 0.0.0.0:")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        UdpSocket::bind(("0.0.0.0", udp_port)).is_err(),
        "the picked UDP port {udp_port} is held by the pod"
    );
    let tcp_address = format!("127.0.0.1:{port}\n");
    assert_eq!(cli.ok(&["port", "web", "8080"]), tcp_address);
    assert_eq!(cli.ok(&["port", "web", "8080/tcp"]), tcp_address);
    assert_eq!(
        cli.fails(&["port", "web", "8080/udp"]).trim(),
        "crius: no public port 8080/udp published for web"
    );

    // ps shows them as Docker does; inspect shows the pod's address, which serves too.
    let table = cli.ok(&["ps"]);
    assert!(table.lines().next().unwrap().contains("PORTS"), "{table}");
    let row = row_with(&table, "web");
    assert!(
        row.contains(&format!(
            "0.0.0.0:{udp_port}->5353/udp, 127.0.0.1:{port}->8080/tcp"
        )),
        "{row}"
    );
    let inspected: serde_json::Value = serde_json::from_str(&cli.ok(&["inspect", "web"])).unwrap();
    let pod_ip: Ipv4Addr = inspected["pod"]["ip"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("no pod IP: {inspected:#}"));
    let subnet = daemon.network().subnet();
    let [a, b, c, _] = pod_ip.octets();
    assert!(
        subnet.starts_with(&format!("{a}.{b}.{c}.")),
        "{pod_ip} in {subnet}"
    );
    assert_eq!(
        inspected["pod"]["portMappings"].as_array().unwrap().len(),
        2
    );
    assert_eq!(http_body(&format!("{pod_ip}:8080")), "hi\n");

    // Another container asking for the same host port fails naming it, leaving nothing.
    let refused = cli.fails(&["run", "-d", "-p", &publish, &cli.image, "true"]);
    assert!(
        refused.contains(&format!("host port {port}/tcp")),
        "{refused}"
    );
    assert_eq!(cli.ok(&["pods", "-q"]).lines().count(), 1);

    // Stopped and re-created by start, the container is served on the same port: the
    // pod kept it.
    cli.ok(&["stop", "-t", "0", "web"]);
    cli.ok(&["start", "web"]);
    assert_eq!(http_body(&format!("127.0.0.1:{port}")), "hi\n");
    assert_eq!(cli.ok(&["port", "web", "8080"]), tcp_address);

    // rm -f removes the pod, which frees both ports.
    assert_eq!(cli.ok(&["rm", "-f", "web"]), "web\n");
    wait_until_free(port);
    UdpSocket::bind(("0.0.0.0", udp_port)).expect("the UDP port is freed with the pod");

    // Bad -p values are usage errors (exit 2) naming the value, before anything is made.
    for (bad, named) in [
        ("8080:99999", "99999"),
        ("80/sctp", "SCTP"),
        ("1-9:80", "1-9"),
    ] {
        let refused = cli.run(&["run", "-p", bad, &cli.image]);
        assert_eq!(refused.code, 2, "{bad}: {}", refused.stderr);
        assert!(refused.stderr.contains(named), "{bad}: {}", refused.stderr);
    }
    cli.assert_all_removed();
}

/// A pod made through the CRI, as kubelet makes them, holding one created container.
async fn kubelet_pod(client: &mut CriClient, cli: &Cli<'_>, name: &str) -> String {
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        log_directory: cli.daemon.dir().join(name).display().to_string(),
        ..PodSandboxConfig::default()
    };
    let pod = client
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    kubelet_container(client, cli, &pod, &config, "twin").await;
    pod
}

async fn kubelet_container(
    client: &mut CriClient,
    cli: &Cli<'_>,
    pod: &str,
    pod_config: &PodSandboxConfig,
    name: &str,
) -> String {
    client
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: name.to_string(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: cli.image.clone(),
                    ..ImageSpec::default()
                }),
                command: vec!["true".to_string()],
                log_path: format!("{name}.log"),
                ..ContainerConfig::default()
            }),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_prefixes_ambiguity_and_errors() {
    let registry = registry_with_busybox();
    let daemon = Daemon::for_registry(registry.addr(), "");
    let cli = Cli::new(&daemon, &registry);
    let mut client = daemon.client().await;
    let alpha = cli.ok(&["run", "-d", "--name", "alpha", &cli.image, "sleep", "1000"]);
    let alpha = alpha.trim();

    // Names taken, bad names, images that do not exist: refused, nothing left behind.
    let refused = cli.fails(&["run", "--name", "alpha", &cli.image, "true"]);
    assert!(
        refused.contains("already in use") && refused.contains(&alpha[..13]),
        "{refused}"
    );
    let refused = cli.fails(&["run", "--name", "no/slash", &cli.image, "true"]);
    assert!(refused.contains("invalid container name"), "{refused}");
    let missing = registry.reference("nothere", "v1");
    let refused = cli.run(&["run", &missing]);
    assert_ne!(refused.code, 0);
    let last = refused.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.starts_with("crius: ") && last.contains("nothere"),
        "{}",
        refused.stderr
    );
    let refused = cli.fails(&["run", "--rm", &cli.image, "/no/such/binary"]);
    assert!(refused.contains("/no/such/binary"), "{refused}");
    assert_eq!(
        cli.ok(&["pods", "-q"]).lines().count(),
        1,
        "failed runs left pods"
    );
    assert_eq!(cli.ok(&["ps", "-aq"]).lines().count(), 1);

    // Unknown names.
    for verb in [
        &["logs", "nosuch"][..],
        &["exec", "nosuch", "true"],
        &["stop", "nosuch"],
        &["start", "nosuch"],
        &["rm", "nosuch"],
    ] {
        let refused = cli.fails(verb);
        assert_eq!(
            refused.trim(),
            "crius: no such container: nosuch",
            "{verb:?}"
        );
    }
    assert_eq!(
        cli.fails(&["inspect", "nosuch"]).trim(),
        "crius: no such object: nosuch"
    );
    // One failure does not stop the others.
    let ran = cli.run(&["stop", "-t", "0", "nosuch", "alpha"]);
    assert_ne!(ran.code, 0);
    assert_eq!(ran.stdout, "alpha\n");
    assert!(ran.stderr.contains("nosuch"), "{}", ran.stderr);
    assert!(row_with(&cli.ok(&["ps", "-a"]), "alpha").contains("Exited (137)"));

    // Two kubelet pods whose containers share a name: the name is ambiguous.
    let first_pod = kubelet_pod(&mut client, &cli, "one").await;
    let second_pod = kubelet_pod(&mut client, &cli, "two").await;
    let refused = cli.fails(&["inspect", "twin"]);
    assert!(
        refused.contains("more than one container") && refused.matches("(twin)").count() == 2,
        "{refused}"
    );
    // Pods resolve by name and id prefix in inspect; containers come first.
    let pod: serde_json::Value = serde_json::from_str(&cli.ok(&["inspect", "one"])).unwrap();
    assert_eq!(pod["status"]["id"], first_pod);
    assert_eq!(pod["status"]["metadata"]["namespace"], "default");
    let pod: serde_json::Value =
        serde_json::from_str(&cli.ok(&["inspect", &second_pod[..12]])).unwrap();
    assert_eq!(pod["status"]["metadata"]["name"], "two");
    let image: serde_json::Value = serde_json::from_str(&cli.ok(&["inspect", &cli.image])).unwrap();
    assert!(image["Id"].as_str().unwrap().starts_with("sha256:"));

    // More containers until two share a first id character (at most 17, by pigeonhole):
    // that character is an ambiguous prefix.
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "one".to_string(),
            uid: "uid-one".to_string(),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        ..PodSandboxConfig::default()
    };
    let mut by_first: HashMap<char, Vec<String>> = HashMap::new();
    for id in cli.ok(&["ps", "-aq"]).lines() {
        by_first
            .entry(id.chars().next().unwrap())
            .or_default()
            .push(id.to_string());
    }
    let mut extra = 0;
    while by_first.values().all(|ids| ids.len() < 2) {
        let id =
            kubelet_container(&mut client, &cli, &first_pod, &config, &format!("c{extra}")).await;
        extra += 1;
        by_first
            .entry(id.chars().next().unwrap())
            .or_default()
            .push(id);
    }
    let (prefix, ids) = by_first.iter().find(|(_, ids)| ids.len() >= 2).unwrap();
    let refused = cli.fails(&["logs", &prefix.to_string()]);
    assert!(refused.contains("more than one container"), "{refused}");
    for id in ids {
        assert!(refused.contains(&id[..13]), "{refused}");
    }

    // rm of kubelet's containers leaves kubelet's pods alone; rm of ours removes our pod.
    let ids = cli.ok(&["ps", "-aq"]);
    let ids: Vec<&str> = ids.lines().collect();
    let mut args = vec!["rm", "-f"];
    args.extend(ids.iter().copied());
    assert_eq!(cli.ok(&args).lines().count(), ids.len());
    assert_eq!(cli.ok(&["ps", "-aq"]), "");
    let pods = cli.ok(&["pods"]);
    assert_eq!(pods.lines().count(), 3, "kubelet's two pods stay: {pods}");
    for pod in [first_pod, second_pod] {
        client
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
            .unwrap();
    }
    cli.assert_all_removed();
}

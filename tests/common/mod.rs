//! The integration tests' harness: a real `criusd` process on a temp socket, root and state
//! dir, a CRI client connected to it as kubelet connects, a real registry
//! ([`registry`]) and test images built deterministically by the tests ([`images`]).
//!
//! Teardown kills only what the harness started, by PID, and asserts that nothing the
//! daemon created outlived it: no mount and no process left under its directories.

// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod bundles;
pub mod images;
pub mod network;
pub mod pods;
pub mod registry;
pub mod token_server;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crius::cri::api::{AuthConfig, ImageSpec, PullImageRequest};
use crius::cri::client::CriClient;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use network::TestNetwork;

/// A number no other test of this run uses at the same time (the tests of one binary
/// share a process): container ids name cgroups, namespaces name runc roots. Of one
/// width, so that none is a prefix of another.
pub fn unique_number() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}{:04}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// How long a daemon may take to start serving or to stop.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(10);

/// A running criusd with its own directories; stopped and checked for leaks on drop.
pub struct Daemon {
    child: Option<Child>,
    dir: TempDir,
    root: PathBuf,
    /// The daemon's own bridge and subnet (used unless the test configures `[network]`).
    network: TestNetwork,
}

impl Daemon {
    /// Starts criusd with the harness's paths and debug logs.
    pub fn start() -> Daemon {
        Daemon::start_with("")
    }

    /// Starts criusd; `extra` is appended to the harness's config (top-level keys must come
    /// before any table in it).
    pub fn start_with(extra: &str) -> Daemon {
        Daemon::start_configured(None, extra)
    }

    /// Starts criusd treating the registry at `addr` as insecure (plain HTTP), with `extra`
    /// config before that.
    pub fn for_registry(addr: &str, extra: &str) -> Daemon {
        Daemon::start_with(&format!(
            "{extra}\n[registries.\"{addr}\"]\ninsecure = true\n"
        ))
    }

    /// Starts criusd with `extra` config and the `[network]` section `network` writes for
    /// the daemon's own test network (to change its subnet or mode).
    pub fn start_with_network(extra: &str, network: impl FnOnce(&TestNetwork) -> String) -> Daemon {
        let slot = TestNetwork::claim();
        let section = network(&slot);
        Daemon::start_configured_on(None, &format!("{extra}\n{section}"), slot)
    }

    /// Starts criusd with its persistent root at `root` (e.g. on a small tmpfs).
    pub fn start_with_root(root: &Path, extra: &str) -> Daemon {
        Daemon::start_configured(Some(root), extra)
    }

    fn start_configured(root: Option<&Path>, extra: &str) -> Daemon {
        Daemon::start_configured_on(root, extra, TestNetwork::claim())
    }

    fn start_configured_on(root: Option<&Path>, extra: &str, network: TestNetwork) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("crius-test-")
            .tempdir()
            .expect("create daemon temp dir");
        let root = root.map_or_else(|| dir.path().join("root"), Path::to_path_buf);
        let mut config = format!(
            "listen = \"{0}/crius.sock\"\nroot = \"{1}\"\nstate = \"{0}/state\"\n{2}\n",
            dir.path().display(),
            root.display(),
            extra
        );
        if !extra.contains("[network]") {
            config.push_str(&network.config());
        }
        let config = if extra.contains("log_level") {
            config
        } else {
            format!("log_level = \"debug\"\n{config}")
        };
        std::fs::write(dir.path().join("crius.toml"), config).expect("write daemon config");
        let mut daemon = Daemon {
            child: None,
            dir,
            root,
            network,
        };
        daemon.spawn();
        daemon
    }

    /// (Re)starts the daemon process on this daemon's directories and waits for the socket.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "daemon already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_criusd"))
            .arg("--config")
            .arg(self.config_path())
            .env_remove("CRIUS_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn criusd");
        self.child = Some(child);
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = self.child_mut().try_wait().expect("poll criusd") {
                panic!("criusd exited during start-up ({status}):\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "criusd did not serve within {DAEMON_TIMEOUT:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A fresh CRI client on the daemon's socket.
    pub async fn client(&self) -> CriClient {
        CriClient::connect(&self.address())
            .await
            .expect("connect to criusd")
    }

    /// `unix://` address of the socket, as kubelet is given it.
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("crius.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("crius.toml")
    }

    pub fn root(&self) -> PathBuf {
        self.root.clone()
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("criusd.log")
    }

    /// Everything the daemon printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon not running").id()
    }

    /// Sends `signal` and waits for the daemon to exit.
    pub fn stop_with(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("daemon not running");
        kill(Pid::from_raw(child.id() as i32), signal).expect("signal criusd");
        let deadline = Instant::now() + DAEMON_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for criusd") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "criusd did not exit within {DAEMON_TIMEOUT:?} of {signal}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Graceful stop as systemd does it: SIGTERM, and the daemon must exit 0.
    pub fn stop(&mut self) {
        let status = self.stop_with(Signal::SIGTERM);
        assert!(
            status.success(),
            "criusd exited with {status} on SIGTERM:\n{}",
            self.logs()
        );
    }

    /// The test's pod network: bridge, subnet, attached veths.
    pub fn network(&self) -> &TestNetwork {
        &self.network
    }

    /// Addresses the daemon's IPAM holds now (one file per address).
    pub fn ip_allocations(&self) -> Vec<String> {
        let dir = self
            .state()
            .join("network/ipam")
            .join(self.network.bridge());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with("last-"))
            .collect()
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("daemon not running")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failed assertion while already unwinding would abort the whole test binary;
        // a failed test instead tears down what its daemon left, so others run clean.
        if std::thread::panicking() {
            tear_down_leftovers(self.dir.path());
        } else {
            assert_nothing_left_under(self.dir.path());
            let veths = self.network.links_on_bridge();
            let addresses = self.ip_allocations();
            if !veths.is_empty() || !addresses.is_empty() {
                self.network.delete_bridge();
                panic!("left on the pod network: veths {veths:?}, addresses {addresses:?}");
            }
        }
        self.network.delete_bridge();
    }
}

/// How many entries `dir` holds (a daemon's state or root subdirectory, say).
pub fn entries(dir: &Path) -> std::io::Result<usize> {
    Ok(std::fs::read_dir(dir)?.count())
}

/// Asserts that no mount point and no process refers to anything under `dir`.
pub fn assert_nothing_left_under(dir: &Path) {
    let dir = dir.to_string_lossy().into_owned();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let leaked_mounts: Vec<&str> = mountinfo
        .lines()
        .filter(|line| {
            line.split(' ')
                .nth(4)
                .is_some_and(|point| point.starts_with(&dir))
        })
        .collect();
    assert!(
        leaked_mounts.is_empty(),
        "mounts left under {dir}: {leaked_mounts:#?}"
    );
    let leaked_processes = processes_mentioning(&dir);
    assert!(
        leaked_processes.is_empty(),
        "processes left under {dir}: {leaked_processes:#?}"
    );
}

/// Deletes, killing them, the containers that the OCI runtime `runc` (a runc command
/// line) keeps under state directory `root`; nothing when there are none.
pub fn force_delete_containers(runc: &str, root: &Path) {
    let listed = Command::new(runc)
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output();
    let ids = listed
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    for id in ids.lines() {
        let _ = Command::new(runc)
            .arg("--root")
            .arg(root)
            .args(["delete", "-f", id])
            .status();
    }
}

/// Removes what a failed test's daemon left under `dir`: containers (through runc, with
/// each shim's private runc root), shims (by pid), then mounts, deepest first.
pub fn tear_down_leftovers(dir: &Path) {
    if let Ok(shims) = std::fs::read_dir(dir.join("state/shims")) {
        for runc_root in shims.flatten().map(|shim| shim.path().join("runc")) {
            force_delete_containers("runc", &runc_root);
        }
    }
    let needle = dir.to_string_lossy().into_owned();
    for process in processes_mentioning(&needle) {
        if let Some(pid) = process
            .split(':')
            .next()
            .and_then(|pid| pid.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&needle))
        .collect();
    mounts.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in mounts {
        let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `pid: cmdline` of every process (but this one) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        // A process may exit between readdir and read: that is not a leak.
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{name}: {cmdline}"));
        }
    }
    found
}

/// An `ImageSpec` naming `image`, as image RPCs take it.
pub fn image_spec(image: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: image.to_string(),
        ..ImageSpec::default()
    })
}

/// PullImage as kubelet sends it; returns the image_ref.
pub async fn pull_image(
    client: &mut CriClient,
    image: &str,
    auth: Option<AuthConfig>,
) -> Result<String, tonic::Status> {
    let request = PullImageRequest {
        image: image_spec(image),
        auth,
        sandbox_config: None,
    };
    let response = client.image.pull_image(request).await?;
    Ok(response.into_inner().image_ref)
}

/// Runs one of the crate's binaries to completion: (exit status, stdout, stderr).
pub fn run_binary(path: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(path)
        .args(args)
        .env_remove("CRIUS_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("run {path}: {err}"));
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

//! A pod network per test daemon: its own bridge and /24, so tests that run at the same
//! time never share (or delete) each other's interfaces and addresses.
//!
//! Slots are claimed with an exclusive lock on `/tmp/crius-test-net/<n>.lock`; the kernel
//! drops the lock when the holder exits, so a crashed test never keeps a slot.
//!
//! Also the host's side of port tests: a free port, a GET retried while the server in a
//! pod starts, and waiting for a host port to be released.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

const SLOTS: u8 = 250;

const NFT: &str = "/usr/sbin/nft";

pub struct TestNetwork {
    index: u8,
    _lock: Flock<File>,
}

impl TestNetwork {
    /// Claims a free slot; panics when all are taken.
    pub fn claim() -> TestNetwork {
        let dir = Path::new("/tmp/crius-test-net");
        std::fs::create_dir_all(dir).expect("create the network slot dir");
        // Start at a slot derived from the pid so parallel tests rarely contend.
        let start = (std::process::id() % u32::from(SLOTS)) as u8;
        for offset in 0..SLOTS {
            let index = (start + offset) % SLOTS;
            let file = File::create(dir.join(format!("{index}.lock"))).expect("open slot lock");
            if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                let network = TestNetwork { index, _lock: lock };
                // A bridge left by a test that was killed before its teardown.
                network.delete_bridge();
                return network;
            }
        }
        panic!("all {SLOTS} test network slots are taken");
    }

    pub fn bridge(&self) -> String {
        format!("crt{}", self.index)
    }

    pub fn subnet(&self) -> String {
        format!("10.231.{}.0/24", self.index)
    }

    /// An IPv6 subnet for dual-stack tests.
    pub fn subnet6(&self) -> String {
        format!("fd31:0:0:{:x}::/64", self.index)
    }

    pub fn gateway(&self) -> String {
        format!("10.231.{}.1", self.index)
    }

    /// The daemon config section that uses this slot with the built-in bridge (not
    /// "auto", which would follow the host's /etc/cni/net.d).
    pub fn config(&self) -> String {
        format!(
            "[network]\nmode = \"bridge\"\nbridge = \"{}\"\nsubnet = \"{}\"\n",
            self.bridge(),
            self.subnet()
        )
    }

    /// Creates this slot's bridge with the gateway address, up, as a CNI bridge plugin
    /// with `isGateway` would, but without the host-wide IP forwarding that turns on.
    pub fn create_bridge(&self) {
        let bridge = self.bridge();
        let gateway = format!("{}/24", self.gateway());
        for args in [
            vec!["link", "add", &bridge, "type", "bridge"],
            vec!["addr", "add", &gateway, "dev", &bridge],
            vec!["link", "set", &bridge, "up"],
        ] {
            let status = Command::new("ip").args(&args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}: {status}");
        }
    }

    /// Names of the interfaces attached to the bridge (the pods' veths).
    pub fn links_on_bridge(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge()])
            .output()
            .expect("run ip link");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .collect()
    }

    pub fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(self.bridge()).exists()
    }

    /// The nftables table that masquerades this slot's pods (`network.masquerade`).
    pub fn masquerade_table(&self) -> String {
        format!("crius-{}", self.bridge())
    }

    /// `nft list table` of the slot's masquerade table; `None` when it does not exist.
    pub fn list_masquerade_table(&self) -> Option<String> {
        let out = Command::new("nft")
            .args(["list", "table", "inet", &self.masquerade_table()])
            .output()
            .expect("run nft");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Deletes this slot's bridge and whatever is attached to it, and its masquerade
    /// table (both outlive the daemon, as on a node).
    pub fn delete_bridge(&self) {
        if Path::new(NFT).exists() {
            let _ = Command::new(NFT)
                .args(["delete", "table", "inet", &self.masquerade_table()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        if !self.bridge_exists() {
            return;
        }
        for link in self.links_on_bridge() {
            let _ = Command::new("ip").args(["link", "del", &link]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .status();
    }
}

/// A network namespace standing in for the world beyond the node: a veth pair to the
/// host, `10.232.<slot>.1/24` on the host's end and `.2` inside, with no route back to
/// the pod subnet, so that only masqueraded pod traffic gets answers. Serves HTTP on
/// port 8080 (busybox httpd) while it lives; removed, and checked gone, on drop.
pub struct OutsideNetwork {
    name: String,
    host_veth: String,
    server: std::process::Child,
    _www: tempfile::TempDir,
}

impl OutsideNetwork {
    /// Creates it next to `slot`'s pod network, serving `text` at `/`.
    pub fn create(slot: &TestNetwork, text: &str) -> OutsideNetwork {
        let name = format!("crius-out-{}", slot.index);
        let host_veth = format!("cxo{}", slot.index);
        let inside_veth = format!("cxi{}", slot.index);
        // Left by a test killed before its teardown.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        let host_address = format!("10.232.{}.1/24", slot.index);
        let inside_address = format!("10.232.{}.2/24", slot.index);
        let in_ns = |args: &[&str]| -> Vec<String> {
            ["netns", "exec", &name, "ip"]
                .iter()
                .chain(args)
                .map(|arg| arg.to_string())
                .collect()
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), name.clone()],
            [
                "link",
                "add",
                &host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &inside_veth,
            ]
            .map(String::from)
            .to_vec(),
            ["link", "set", &inside_veth, "netns", &name]
                .map(String::from)
                .to_vec(),
            ["addr", "add", &host_address, "dev", &host_veth]
                .map(String::from)
                .to_vec(),
            ["link", "set", &host_veth, "up"].map(String::from).to_vec(),
            in_ns(&["addr", "add", &inside_address, "dev", &inside_veth]),
            in_ns(&["link", "set", &inside_veth, "up"]),
            in_ns(&["link", "set", "lo", "up"]),
        ];
        for args in steps {
            let status = Command::new("ip").args(&args).status().expect("run ip");
            assert!(status.success(), "ip {args:?}: {status}");
        }
        let www = tempfile::tempdir().expect("create the web root");
        std::fs::write(www.path().join("index.html"), format!("{text}\n")).unwrap();
        let server = Command::new("ip")
            .args([
                "netns", "exec", &name, "busybox", "httpd", "-f", "-p", "8080", "-h",
            ])
            .arg(www.path())
            .spawn()
            .expect("start httpd outside");
        OutsideNetwork {
            name,
            host_veth,
            server,
            _www: www,
        }
    }

    /// The server's address: `http://10.232.<slot>.2:8080/`.
    pub fn url(&self) -> String {
        let index = self.name.trim_start_matches("crius-out-");
        format!("http://10.232.{index}.2:8080/")
    }
}

impl Drop for OutsideNetwork {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        // Deleting the namespace takes its end of the veth pair, and with it the host's.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new("/sys/class/net").join(&self.host_veth).exists() {
            if Instant::now() > deadline {
                let _ = Command::new("ip")
                    .args(["link", "del", &self.host_veth])
                    .status();
                if !std::thread::panicking() {
                    panic!("{} outlived its namespace", self.host_veth);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A TCP port free on all addresses now.
pub fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET / on `addr` (HTTP/1.0, so the server closes), retried while the server starts;
/// the whole answer, headers included.
pub fn http_get(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })();
        match attempt {
            Ok(answer) if answer.contains("200 OK") => return answer,
            other => {
                assert!(Instant::now() < deadline, "GET {addr}: {other:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Waits until TCP `port` can be bound on all addresses again: the daemon closes a
/// pod's listeners by aborting their tasks, which is not instant.
pub fn wait_until_free(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpListener::bind(("0.0.0.0", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "host port {port} still taken after its pod went"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

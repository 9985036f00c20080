//! A real OCI distribution (v2) registry per test.
//!
//! Runs Debian's `docker-registry` (distribution 2.x) on 127.0.0.1 with its
//! config, storage and log in a private temp dir, and pushes the test images
//! with `skopeo`. Nothing it runs reaches beyond the loopback interface.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::images::{digest_of, TestImage};
use super::token_server::{self, TokenServer};

const REGISTRY_BIN: &str = "docker-registry";
const SKOPEO_BIN: &str = "skopeo";
/// How long `start` waits for one registry process to answer `GET /v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Grace period between SIGTERM and SIGKILL on drop.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at finding a port that stays free until the registry binds it.
const START_ATTEMPTS: usize = 5;
/// Response header (set in the config) through which `start` recognises its
/// own registry rather than some other process that grabbed the port.
const MARKER_HEADER: &str = "X-Crius-Test-Registry";

/// A running registry; stopped and its storage removed on drop.
pub struct Registry {
    child: Child,
    addr: String,
    /// User and password when the registry requires authentication.
    credentials: Option<(String, String)>,
    /// The token service of a registry started with [`Registry::start_with_token_auth`].
    token_server: Option<TokenServer>,
    // Declared last so that it is removed after `Drop::drop` has stopped the
    // process that writes into it.
    dir: TempDir,
}

enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

impl Registry {
    /// Starts a registry on 127.0.0.1:<free port> and waits until it serves
    /// `GET /v2/` with 200.
    pub fn start() -> Registry {
        Registry::start_with(None, false)
    }

    /// Starts a registry that requires HTTP Basic authentication as `user`/`password`
    /// (an htpasswd file made with Debian's `htpasswd -B`).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user.to_string(), password.to_string())), false)
    }

    /// Starts a registry that requires Bearer tokens from a token service, which grants
    /// them to `user`/`password` (the distribution spec's token flow).
    pub fn start_with_token_auth(user: &str, password: &str) -> Registry {
        Registry::start_with(Some((user.to_string(), password.to_string())), true)
    }

    /// A token the registry accepts for pulling `repository` (token auth only).
    pub fn token_for(&self, repository: &str) -> String {
        self.token_server
            .as_ref()
            .expect("registry started with token auth")
            .token_for(repository)
    }

    fn start_with(credentials: Option<(String, String)>, token: bool) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("crius-registry-")
            .tempdir()
            .expect("create registry temp dir");
        let storage = dir.path().join("storage");
        fs::create_dir(&storage).expect("create registry storage dir");
        let config_path = dir.path().join("config.yml");
        let log_path = dir.path().join("registry.log");
        // Unique per registry: the temp dir's name is unique on this machine.
        let marker = dir
            .path()
            .file_name()
            .expect("temp dir has a name")
            .to_string_lossy()
            .into_owned();

        let token_server = match (&credentials, token) {
            (Some((user, password)), true) => Some(TokenServer::start(dir.path(), user, password)),
            _ => None,
        };
        let htpasswd = credentials
            .as_ref()
            .filter(|_| !token)
            .map(|(user, password)| {
                let out = Command::new("htpasswd")
                    .args(["-Bbn", user, password])
                    .output()
                    .unwrap_or_else(|e| {
                        panic!("run htpasswd (apt-get install apache2-utils): {e}")
                    });
                assert!(
                    out.status.success(),
                    "htpasswd failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let path = dir.path().join("htpasswd");
                fs::write(&path, &out.stdout).expect("write htpasswd");
                path
            });
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            // The port is free now but may be taken by someone else before
            // the registry binds it; then the registry exits and we retry.
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let auth = match (&htpasswd, &token_server) {
                (Some(path), _) => format!(
                    "auth:\n  htpasswd:\n    realm: crius-test\n    path: {}\n",
                    path.display()
                ),
                (None, Some(server)) => format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    server.realm(),
                    token_server::SERVICE,
                    token_server::ISSUER,
                    server.certificate().display()
                ),
                (None, None) => String::new(),
            };
            fs::write(&config_path, config(&addr, &storage, &marker, &auth))
                .expect("write registry config");
            let log = fs::File::create(&log_path).expect("create registry log");
            let mut cmd = Command::new(REGISTRY_BIN);
            cmd.arg("serve")
                .arg(&config_path)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone registry log handle"))
                .stderr(log);
            // REGISTRY_* variables override the config file (e.g. a proxy
            // remote URL); the test registry must only use what we wrote.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("REGISTRY_") {
                    cmd.env_remove(key);
                }
            }
            let mut child = cmd.spawn().unwrap_or_else(|e| {
                panic!("spawn {REGISTRY_BIN} (apt-get install docker-registry): {e}")
            });
            match wait_ready(&mut child, &addr, &marker, credentials.is_some()) {
                Startup::Ready => {
                    return Registry {
                        child,
                        addr,
                        credentials,
                        token_server,
                        dir,
                    }
                }
                Startup::Exited(status) => {
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    failures.push_str(&format!(
                        "attempt {attempt} on {addr}: exited with {status}\n{log}\n"
                    ));
                }
                Startup::TimedOut => {
                    stop(&mut child);
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    panic!(
                        "{REGISTRY_BIN} on {addr} did not answer GET /v2/ within {READY_TIMEOUT:?}; log:\n{log}"
                    );
                }
            }
        }
        panic!("{REGISTRY_BIN} failed to start {START_ATTEMPTS} times:\n{failures}");
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding config, storage and log (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's log so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT/repo:tag`, the image reference a CRI client would pull.
    pub fn reference(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.addr)
    }

    /// Pushes `image` (all platforms, digests unchanged) as `repo:tag`.
    pub fn push(&self, image: &TestImage, repo: &str, tag: &str) {
        let src = format!("oci:{}:{}", image.layout.display(), image.tag);
        let dest = format!("docker://{}", self.reference(repo, tag));
        let out = self
            .skopeo()
            .args([
                "copy",
                "--quiet",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .args(self.creds_args("--dest-creds", "--dest-no-creds"))
            .arg(&src)
            .arg(&dest)
            .output()
            .unwrap_or_else(|e| panic!("run {SKOPEO_BIN} (apt-get install skopeo): {e}"));
        assert!(
            out.status.success(),
            "skopeo copy {src} {dest} failed ({}):\n{}\nregistry log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Digest and raw bytes of the manifest (or index) served for repo:tag.
    pub fn manifest(&self, repo: &str, tag: &str) -> (String, Vec<u8>) {
        let reference = format!("docker://{}", self.reference(repo, tag));
        let out = self
            .skopeo()
            .args(["inspect", "--raw", "--tls-verify=false"])
            .args(self.creds_args("--creds", "--no-creds"))
            .arg(&reference)
            .output()
            .unwrap_or_else(|e| panic!("run {SKOPEO_BIN} (apt-get install skopeo): {e}"));
        assert!(
            out.status.success(),
            "skopeo inspect --raw {reference} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        (digest_of(&out.stdout), out.stdout)
    }

    /// skopeo's credential arguments for this registry.
    fn creds_args(&self, with: &str, without: &str) -> Vec<String> {
        match &self.credentials {
            Some((user, password)) => vec![with.to_string(), format!("{user}:{password}")],
            None => vec![without.to_string()],
        }
    }

    /// skopeo with its scratch files inside our temp dir and no dependence
    /// on the host's signature policy (the images are unsigned test data).
    fn skopeo(&self) -> Command {
        let tmp = self.dir.path().join("skopeo-tmp");
        fs::create_dir_all(&tmp).expect("create skopeo tmp dir");
        let mut cmd = Command::new(SKOPEO_BIN);
        cmd.arg("--insecure-policy")
            .arg("--tmpdir")
            .arg(&tmp)
            .stdin(Stdio::null());
        cmd
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`], and reap. Signals are only
/// sent while the child is unreaped, so the PID cannot belong to another
/// process.
fn stop(child: &mut Child) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"));
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            _ => return,
        }
    }
    let _ = kill(pid, Signal::SIGKILL);
    let _ = child.wait();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port on 127.0.0.1")
        .port()
}

/// Registry config: loopback only, filesystem storage, deletes allowed, and
/// none of the features that could reach outside (notifications, proxy/pull
/// through cache, redis, error reporting). Logs go to stderr, which `start`
/// redirects into the temp dir.
/// `auth` is the registry's `auth:` section, or empty.
fn config(addr: &str, storage: &Path, marker: &str, auth: &str) -> String {
    format!(
        "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: crius-test-registry
  headers:
    X-Content-Type-Options: [nosniff]
    {MARKER_HEADER}: [\"{marker}\"]
{auth}",
        storage = storage.display()
    )
}

/// Polls `GET /v2/` until our registry (recognised by its marker header)
/// answers 200 (401 when it requires authentication), the process exits, or
/// [`READY_TIMEOUT`] passes.
fn wait_ready(child: &mut Child, addr: &str, marker: &str, auth: bool) -> Startup {
    let ready_status = if auth { " 401" } else { " 200" };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Startup::Exited(status);
        }
        if let Some(response) = get_v2(addr) {
            let head = response.to_ascii_lowercase();
            let ours = head.contains(&format!(
                "{}: {}",
                MARKER_HEADER.to_ascii_lowercase(),
                marker.to_ascii_lowercase()
            ));
            let status_ok = head
                .lines()
                .next()
                .is_some_and(|line| line.contains(ready_status));
            if ours && status_ok {
                return Startup::Ready;
            }
        }
        if Instant::now() >= deadline {
            return Startup::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One plain HTTP/1.0 `GET /v2/`; returns the response head, if any.
fn get_v2(addr: &str) -> Option<String> {
    let sock_addr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&sock_addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(stream, "GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    (!head.is_empty()).then(|| head.to_string())
}

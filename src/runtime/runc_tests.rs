//! Proof that runc accepts the specs: run a busybox container from one.
//!
//! Runs only where runc is installed and the tests run as root (runc needs both); it
//! prints why and passes otherwise. Isolation: runc gets a private `--root` in a temp
//! dir (never the shared `/run/runc`), the container a unique ID and cgroup, and a guard
//! deletes the container however the test ends.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;

const RUNC_PATHS: [&str; 2] = ["/usr/sbin/runc", "/usr/bin/runc"];
const BUSYBOX: &str = "/bin/busybox";
/// Far more than `echo` needs, short enough that a hang fails the test rather than CI.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Deletes the container (and so its cgroup) when dropped.
struct ContainerGuard<'a> {
    runc: &'a Path,
    state_root: &'a Path,
    id: String,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.runc)
            .arg("--root")
            .arg(self.state_root)
            .args(["delete", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Copies `/bin/busybox` and the shared libraries `ldd` lists into `rootfs`, at the same
/// paths (Debian's busybox is dynamically linked), and a root-only `/etc/passwd`.
fn install_busybox(rootfs: &Path) {
    let mut files = vec![PathBuf::from(BUSYBOX)];
    // ldd fails on a static busybox, which then needs nothing else.
    let ldd = Command::new("ldd")
        .arg(BUSYBOX)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    for line in ldd.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vdso has no path.
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(path));
        }
    }
    for file in files {
        let target = rootfs.join(file.strip_prefix("/").unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&file, &target).unwrap();
    }
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
}

#[test]
fn runc_runs_a_container_from_the_spec() {
    let Some(runc) = RUNC_PATHS.iter().map(Path::new).find(|p| p.exists()) else {
        eprintln!("skipped: runc is not installed");
        return;
    };
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: {BUSYBOX} is not installed");
        return;
    }
    let uid = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Uid:")
                .map(|v| v.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false);
    if !uid {
        eprintln!("skipped: runc needs root");
        return;
    }

    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    let state_root = work.path().join("runc-state");
    std::fs::create_dir_all(&rootfs).unwrap();
    std::fs::create_dir_all(&state_root).unwrap();
    install_busybox(&rootfs);

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let id = format!("crius-spec-test-{}-{nanos}", std::process::id());
    let config = ContainerConfig {
        name: "echo".into(),
        // `echo hello` proves the process ran; the status lines prove the seccomp
        // filter, no_new_privs and the default capability set reached the process.
        command: vec![BUSYBOX.into(), "sh".into(), "-c".into()],
        args: vec![format!(
            "echo hello && {BUSYBOX} grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status"
        )],
        linux: LinuxContainerConfig {
            resources: LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                cpu_shares: 256,
                ..Default::default()
            },
            security_context: LinuxContainerSecurityContext {
                namespace_options: NamespaceOption {
                    network: NamespaceMode::Node,
                    pid: NamespaceMode::Container,
                    ipc: NamespaceMode::Node,
                },
                no_new_privs: true,
                seccomp: SeccompProfile::RuntimeDefault,
                ..Default::default()
            },
        },
        ..Default::default()
    };
    let host = HostContext {
        capabilities: DEFAULT_CAPABILITY_NAMES.map(String::from).to_vec(),
        swap_accounting: false,
        // An rlimit runc can set without CAP_SYS_RESOURCE: this process's own.
        rlimits: vec![own_nofile_limit()],
        ..Default::default()
    };
    let spec = container_spec(&ContainerSpecInput {
        config: &config,
        image: &ImageConfig::default(),
        sandbox: &SandboxContext {
            id: "sandbox-for-runc-test".into(),
            ..Default::default()
        },
        host: &host,
        rootfs: &rootfs,
        cgroups_path: &format!("/{id}"),
        target_pid_namespace: None,
    })
    .unwrap();
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&spec).unwrap(),
    )
    .unwrap();

    let _guard = ContainerGuard {
        runc,
        state_root: &state_root,
        id: id.clone(),
    };
    let mut child = Command::new(runc)
        .arg("--root")
        .arg(&state_root)
        .arg("run")
        .arg("--bundle")
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("runc run did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "runc run failed ({status}): {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"hello"),
        "stdout: {stdout} stderr: {stderr}"
    );
    let status_line = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(status_line("Seccomp:"), "2", "filter mode: {stdout}");
    assert_eq!(status_line("NoNewPrivs:"), "1", "{stdout}");
    // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE
    // NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP, as a bit mask.
    assert_eq!(status_line("CapEff:"), "00000000a80425fb", "{stdout}");
}

/// This process's `RLIMIT_NOFILE`, from `/proc/self/limits`.
fn own_nofile_limit() -> Rlimit {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let values: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    Rlimit {
        kind: oci_spec::runtime::PosixRlimitType::RlimitNofile,
        soft: values[0],
        hard: values[1],
    }
}

/// The non-privileged default set, which every Linux host's bounding set holds.
const DEFAULT_CAPABILITY_NAMES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

//! Tests of [`container_spec`] as a whole: how the parts land in the spec and what the
//! serialised `config.json` looks like. The parts' rules are tested in their own files.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability as OciCapability, LinuxNamespaceType, PosixRlimitType};

use super::*;

/// A rootfs with an `/etc/passwd` and `/etc/group`, and the pieces of an input.
struct Fixture {
    rootfs: tempfile::TempDir,
    config: ContainerConfig,
    image: ImageConfig,
    sandbox: SandboxContext,
    host: HostContext,
}

impl Fixture {
    fn new() -> Self {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(rootfs.path().join("etc")).unwrap();
        std::fs::write(
            rootfs.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(rootfs.path().join("etc/group"), "root:x:0:\nwww:x:33:\n").unwrap();
        Self {
            rootfs,
            config: ContainerConfig {
                name: "app".into(),
                annotations: [("io.kubernetes.pod.name".to_string(), "web-0".to_string())].into(),
                ..Default::default()
            },
            image: ImageConfig {
                entrypoint: vec!["/bin/server".into()],
                cmd: vec!["--port=80".into()],
                env: vec!["LANG=C.UTF-8".into()],
                user: "web".into(),
                ..Default::default()
            },
            sandbox: SandboxContext {
                id: "sb-1234".into(),
                hostname: "web-0".into(),
                sysctls: [(
                    "net.ipv4.ip_unprivileged_port_start".to_string(),
                    "0".to_string(),
                )]
                .into(),
                namespaces: SandboxNamespaces {
                    network: Some("/run/crius/netns/sb-1234".into()),
                    ipc: Some("/proc/42/ns/ipc".into()),
                    uts: Some("/proc/42/ns/uts".into()),
                    pid: Some("/proc/42/ns/pid".into()),
                },
                files: SandboxFiles {
                    hosts: Some("/var/lib/crius/sb-1234/hosts".into()),
                    resolv_conf: Some("/var/lib/crius/sb-1234/resolv.conf".into()),
                    hostname: Some("/var/lib/crius/sb-1234/hostname".into()),
                    shm: Some("/run/crius/sb-1234/shm".into()),
                },
            },
            host: HostContext {
                capabilities: ["CHOWN", "KILL", "SYS_ADMIN", "NET_ADMIN", "SETUID"]
                    .map(String::from)
                    .to_vec(),
                cgroup_v2: false,
                swap_accounting: true,
                device_dir: None,
                rlimits: vec![DEFAULT_NOFILE_RLIMIT],
                pids_limit: 0,
            },
        }
    }

    fn security(&mut self) -> &mut LinuxContainerSecurityContext {
        &mut self.config.linux.security_context
    }

    fn spec(&self) -> Result<Spec, SpecError> {
        container_spec(&ContainerSpecInput {
            config: &self.config,
            image: &self.image,
            sandbox: &self.sandbox,
            host: &self.host,
            rootfs: self.rootfs.path(),
            cgroups_path: "/kubepods/pod-uid/ctr",
            target_pid_namespace: None,
        })
    }
}

fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
    spec.linux().as_ref().unwrap()
}

fn process(spec: &Spec) -> &oci_spec::runtime::Process {
    spec.process().as_ref().unwrap()
}

#[test]
fn a_typical_container() {
    let fixture = Fixture::new();
    let spec = fixture.spec().unwrap();
    let process = process(&spec);
    assert_eq!(
        process.args().clone().unwrap(),
        ["/bin/server", "--port=80"]
    );
    assert_eq!((process.user().uid(), process.user().gid()), (33, 33));
    assert_eq!(process.cwd(), Path::new("/"));
    assert_eq!(process.terminal(), Some(false));
    // Absent, not false: see `container_process`.
    assert_eq!(process.no_new_privileges(), None);
    let env = process.env().clone().unwrap();
    assert!(env.contains(&"HOSTNAME=web-0".to_string()));
    assert!(env.contains(&"LANG=C.UTF-8".to_string()));
    assert!(env.iter().any(|e| e.starts_with("PATH=")));
    let rlimit = process.rlimits().clone().unwrap()[0];
    assert_eq!(rlimit.typ(), PosixRlimitType::RlimitNofile);
    assert_eq!((rlimit.soft(), rlimit.hard()), (1_048_576, 1_048_576));

    assert_eq!(spec.hostname().as_deref(), Some("web-0"));
    assert_eq!(spec.root().as_ref().unwrap().path(), fixture.rootfs.path());
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));

    let annotations = spec.annotations().clone().unwrap();
    assert_eq!(annotations["io.kubernetes.cri.container-type"], "container");
    assert_eq!(annotations["io.kubernetes.cri.sandbox-id"], "sb-1234");
    assert_eq!(annotations["io.kubernetes.cri.container-name"], "app");
    assert_eq!(annotations["io.kubernetes.pod.name"], "web-0");

    let linux = linux(&spec);
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/pod-uid/ctr"))
    );
    assert_eq!(
        linux.sysctl().as_ref().unwrap()["net.ipv4.ip_unprivileged_port_start"],
        "0"
    );
    assert_eq!(
        linux.masked_paths().clone().unwrap(),
        DEFAULT_MASKED_PATHS.map(String::from)
    );
    assert_eq!(
        linux.readonly_paths().clone().unwrap(),
        DEFAULT_READONLY_PATHS.map(String::from)
    );
    assert!(linux.seccomp().is_none(), "absent seccomp means unconfined");
    let namespaces: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap()
        .iter()
        .map(|n| (n.typ(), n.path().clone()))
        .collect();
    assert!(namespaces.contains(&(
        LinuxNamespaceType::Network,
        Some(PathBuf::from("/run/crius/netns/sb-1234"))
    )));
    assert!(namespaces.contains(&(LinuxNamespaceType::Mount, None)));
}

#[test]
fn host_network_pod_gets_no_hostname_and_no_network_or_uts_namespace() {
    let mut fixture = Fixture::new();
    fixture.security().namespace_options.network = NamespaceMode::Node;
    let spec = fixture.spec().unwrap();
    assert!(spec.hostname().is_none());
    let types: Vec<_> = linux(&spec)
        .namespaces()
        .clone()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert!(!types.contains(&LinuxNamespaceType::Network));
    assert!(!types.contains(&LinuxNamespaceType::Uts));
    assert!(!process(&spec)
        .env()
        .clone()
        .unwrap()
        .iter()
        .any(|e| e.starts_with("HOSTNAME=")));
}

#[test]
fn privileged_container() {
    let mut fixture = Fixture::new();
    fixture.host.device_dir = Some("/dev".into());
    let security = fixture.security();
    security.privileged = true;
    security.seccomp = SeccompProfile::RuntimeDefault;
    security.apparmor_profile = Some("crius-default".into());
    security.masked_paths = Some(vec!["/proc/kcore".into()]);
    let spec = fixture.spec().unwrap();

    let caps = process(&spec).capabilities().clone().unwrap();
    let bounding = caps.bounding().clone().unwrap();
    assert_eq!(bounding.len(), 5);
    assert!(bounding.contains(&OciCapability::SysAdmin));
    assert!(process(&spec).apparmor_profile().is_none());

    let linux = linux(&spec);
    assert!(linux.masked_paths().is_none());
    assert!(linux.readonly_paths().is_none());
    assert!(linux.seccomp().is_none());
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    assert!(linux
        .devices()
        .clone()
        .unwrap()
        .iter()
        .any(|d| d.path() == Path::new("/dev/null")));
    let sys = spec
        .mounts()
        .clone()
        .unwrap()
        .into_iter()
        .find(|m| m.destination() == Path::new("/sys"))
        .unwrap();
    assert!(sys.options().clone().unwrap().contains(&"rw".to_string()));
}

#[test]
fn security_context_settings_land_in_the_spec() {
    let mut fixture = Fixture::new();
    fixture.config.tty = true;
    fixture.config.linux.resources.oom_score_adj = 500;
    let security = fixture.security();
    security.readonly_rootfs = true;
    security.no_new_privs = true;
    security.masked_paths = Some(vec![]);
    security.readonly_paths = Some(vec!["/proc/sys".into()]);
    security.seccomp = SeccompProfile::RuntimeDefault;
    security.apparmor_profile = Some("crius-default".into());
    security.selinux_label = Some("system_u:system_r:container_t:s0:c1,c2".into());
    security.capabilities.drop_capabilities = vec!["ALL".into()];
    let spec = fixture.spec().unwrap();

    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let process = process(&spec);
    assert_eq!(process.terminal(), Some(true));
    assert_eq!(process.no_new_privileges(), Some(true));
    assert_eq!(process.oom_score_adj(), Some(500));
    assert_eq!(process.apparmor_profile().as_deref(), Some("crius-default"));
    assert_eq!(
        process.selinux_label().as_deref(),
        Some("system_u:system_r:container_t:s0:c1,c2")
    );
    assert!(process
        .capabilities()
        .clone()
        .unwrap()
        .effective()
        .clone()
        .unwrap()
        .is_empty());

    let linux = linux(&spec);
    assert_eq!(linux.masked_paths().clone().unwrap(), Vec::<String>::new());
    assert_eq!(linux.readonly_paths().clone().unwrap(), ["/proc/sys"]);
    let seccomp = linux.seccomp().as_ref().unwrap();
    assert_eq!(
        seccomp.default_action(),
        oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
    );
}

#[test]
fn localhost_seccomp_error_names_the_profile() {
    let mut fixture = Fixture::new();
    fixture.security().seccomp = SeccompProfile::Localhost("/no/such/profile.json".into());
    let err = fixture.spec().unwrap_err();
    assert!(err.to_string().contains("/no/such/profile.json"), "{err}");
}

#[test]
fn errors_from_the_parts_propagate() {
    let mut fixture = Fixture::new();
    fixture.image.user = "nobody-in-passwd".into();
    assert!(matches!(
        fixture.spec().unwrap_err(),
        SpecError::UserNotFound { .. }
    ));

    let mut fixture = Fixture::new();
    fixture.image.entrypoint.clear();
    fixture.image.cmd.clear();
    assert!(matches!(fixture.spec().unwrap_err(), SpecError::NoCommand));

    let mut fixture = Fixture::new();
    fixture.config.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: "/no/such/crius/dir".into(),
        ..Default::default()
    });
    let err = fixture.spec().unwrap_err();
    assert!(err.to_string().contains("mounts[0].host_path"), "{err}");
}

#[test]
fn serialises_to_the_json_runc_reads() {
    let mut fixture = Fixture::new();
    fixture.config.linux.resources.memory_limit_in_bytes = 64 << 20;
    fixture.security().seccomp = SeccompProfile::RuntimeDefault;
    let spec = fixture.spec().unwrap();
    let json: serde_json::Value = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["ociVersion"], OCI_VERSION);
    assert_eq!(json["process"]["args"][0], "/bin/server");
    assert_eq!(json["process"]["user"]["uid"], 33);
    assert_eq!(
        json["root"]["path"],
        fixture.rootfs.path().display().to_string()
    );
    let namespaces = json["linux"]["namespaces"].as_array().unwrap();
    assert!(namespaces
        .iter()
        .any(|n| n["type"] == "network" && n["path"] == "/run/crius/netns/sb-1234"));
    assert!(namespaces.iter().any(|n| n["type"] == "mount"));
    assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
    assert_eq!(json["linux"]["resources"]["devices"][0]["allow"], false);
    assert_eq!(json["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(json["linux"]["cgroupsPath"], "/kubepods/pod-uid/ctr");
    assert!(json["linux"]["maskedPaths"].is_array());
    assert_eq!(json["process"]["rlimits"][0]["type"], "RLIMIT_NOFILE");
    assert!(json["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("CAP_CHOWN")));
    assert!(json["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["destination"] == "/etc/resolv.conf" && m["type"] == "bind"));
}

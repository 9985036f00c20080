//! OCI runtime specs for containers: (sandbox, CRI container config, image config) →
//! `config.json`, as runc, crun, youki or the embedded runtime read it.
//!
//! Pure apart from reading what the spec must describe: the rootfs's `/etc/passwd` and
//! `/etc/group` (confined to the rootfs, see `user.rs`), the host device nodes and mount
//! sources the request names, and a `Localhost` seccomp profile. Nothing is created,
//! mounted or changed.
//!
//! Follows the OCI runtime-spec (`config.md`, `config-linux.md`) and the Kubernetes
//! semantics of the CRI `runtime.v1` messages as the kubelet relies on them and
//! containerd's CRI plugin implements them (`container_create_linux.go`,
//! `pkg/oci/spec_opts.go`). One file per part of the spec:
//! - `process_args.rs`: argv, environment, working directory.
//! - `user.rs`: uid, gid and supplementary groups.
//! - `capabilities.rs`, `seccomp.rs`: what the process may do.
//! - `mounts.rs`, `devices.rs`, `namespaces.rs`, `resources.rs`: what it sees and uses.
//! - `sandbox_files.rs`: the sandbox's `resolv.conf` and `hosts` text.
//!
//! Invariants: every error names the CRI field (or file) at fault, so the CRI layer can
//! return it as InvalidArgument / NotFound without rewording; the spec is complete for
//! `runc run` (a test runs one where runc is installed).

mod capabilities;
mod devices;
mod input;
mod mounts;
mod namespaces;
mod process_args;
mod resources;
mod sandbox_files;
mod seccomp;
mod user;

#[cfg(test)]
mod runc_tests;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;

use oci_spec::runtime::{
    Capabilities, Linux, LinuxBuilder, LinuxCapabilities, PosixRlimitBuilder, Process,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

pub use capabilities::host_capabilities;
pub use input::{
    Capability, ContainerConfig, ContainerSpecInput, Device, DnsConfig, HostContext, HugepageLimit,
    ImageConfig, KeyValue, LinuxContainerConfig, LinuxContainerResources,
    LinuxContainerSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption, Rlimit,
    SandboxContext, SandboxFiles, SandboxNamespaces, SeccompProfile, SupplementalGroupsPolicy,
    DEFAULT_NOFILE_RLIMIT,
};
pub use mounts::{check_host_propagation, HOST_MOUNT_TABLE};
pub use sandbox_files::{hosts_file, resolv_conf};

/// The OCI runtime-spec version the specs declare: the one runc 1.1 implements, so every
/// supported runtime accepts it.
const OCI_VERSION: &str = "1.0.2-dev";

/// Paths hidden from non-privileged containers (containerd's default `maskedPaths`):
/// kernel memory, keys, timers and firmware interfaces that leak host state.
const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths read-only in non-privileged containers (containerd's default `readonlyPaths`):
/// host-wide kernel knobs.
const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Annotations containerd sets so OCI hooks and runtimes (e.g. kata, gVisor) can tell a
/// pod's containers from its sandbox and find the sandbox.
const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const ANNOTATION_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

/// Why a spec could not be built; each message names the CRI field or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(
        "no process to run: command and args are empty and the image has no ENTRYPOINT or CMD"
    )]
    NoCommand,
    #[error("security_context.{field}: {reason}")]
    InvalidUser { field: &'static str, reason: String },
    #[error("user {user:?} not found in {}/etc/passwd", rootfs.display())]
    UserNotFound { user: String, rootfs: PathBuf },
    #[error("group {group:?} not found in {}/etc/group", rootfs.display())]
    GroupNotFound { group: String, rootfs: PathBuf },
    #[error("cannot read {} of the container rootfs: {source}", path.display())]
    RootfsFile { path: PathBuf, source: io::Error },
    #[error("mounts[{index}].host_path {}: {source}", path.display())]
    MountHostPath {
        index: usize,
        path: PathBuf,
        source: io::Error,
    },
    #[error("mounts[{index}].{field}: {reason}")]
    InvalidMount {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("devices[{index}].host_path {}: {source}", path.display())]
    DeviceHostPath {
        index: usize,
        path: PathBuf,
        source: io::Error,
    },
    #[error("devices[{index}].{field}: {reason}")]
    InvalidDevice {
        index: usize,
        field: &'static str,
        reason: String,
    },
    #[error("cannot list the host devices under {}: {source}", path.display())]
    HostDevices { path: PathBuf, source: io::Error },
    #[error("{field}: unknown capability {name:?}")]
    UnknownCapability { field: &'static str, name: String },
    #[error(
        "namespace_options.{namespace} is {mode:?} but no {namespace} namespace path was given"
    )]
    MissingNamespace {
        namespace: &'static str,
        mode: NamespaceMode,
    },
    #[error("namespace_options.{namespace}: mode {mode:?} is not supported")]
    UnsupportedNamespaceMode {
        namespace: &'static str,
        mode: NamespaceMode,
    },
    #[error("resources.{field}: invalid value {value}")]
    InvalidResource { field: &'static str, value: String },
    #[error("cannot read seccomp profile {}: {source}", path.display())]
    SeccompProfileRead { path: PathBuf, source: io::Error },
    #[error(
        "cannot read the host's mount table {}: {source}",
        mounts::HOST_MOUNT_TABLE
    )]
    MountTable { source: io::Error },
    #[error(
        "mounts[{index}].propagation: host path {} is mounted on {}, which is not {wanted} mount \
         (`mount --make-rshared {}` makes it one)",
        path.display(), mount_point.display(), mount_point.display()
    )]
    MountNotPropagating {
        index: usize,
        path: PathBuf,
        mount_point: PathBuf,
        wanted: &'static str,
    },
    #[error("invalid seccomp profile {}: {source}", path.display())]
    SeccompProfileParse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot assemble {part} of the OCI spec: {source}")]
    Assemble {
        part: &'static str,
        source: oci_spec::OciSpecError,
    },
}

/// Builds the OCI runtime spec of one container.
///
/// oci-spec's builders fill every field left unset from the type's `Default`, which for
/// `Spec`, `Process`, `Linux` and `Root` is a sample container (hostname "youki", argv
/// `sh`, NOFILE 1024, the default masked paths…). So every field those defaults fill is
/// set explicitly here, to a value or to `None`.
pub fn container_spec(input: &ContainerSpecInput<'_>) -> Result<Spec, SpecError> {
    let security = &input.config.linux.security_context;
    // Without its own UTS namespace the container sees the node's hostname, and runc
    // refuses to set one.
    let hostname = if namespaces::has_private_uts(&security.namespace_options) {
        input.sandbox.hostname.as_str()
    } else {
        ""
    };
    let capabilities = capabilities::container_capabilities(
        &security.capabilities,
        security.privileged,
        input.host,
    )?;
    let process = container_process(input, hostname, capabilities.clone())?;
    let mounts = mounts::container_mounts(&mounts::MountPlan {
        cri_mounts: &input.config.mounts,
        sandbox_files: &input.sandbox.files,
        privileged: security.privileged,
        readonly_rootfs: security.readonly_rootfs,
    })?;
    // The seccomp filter depends on the capabilities the process ends up with: a
    // capability unlocks the syscalls it guards.
    let linux = container_linux(input, &capabilities.effective().clone().unwrap_or_default())?;

    let mut annotations: HashMap<String, String> = input.config.annotations.clone();
    annotations.insert(ANNOTATION_CONTAINER_TYPE.into(), "container".into());
    annotations.insert(ANNOTATION_SANDBOX_ID.into(), input.sandbox.id.clone());
    annotations.insert(ANNOTATION_CONTAINER_NAME.into(), input.config.name.clone());

    let root = RootBuilder::default()
        .path(input.rootfs)
        .readonly(security.readonly_rootfs)
        .build()
        .map_err(|source| SpecError::Assemble {
            part: "root",
            source,
        })?;
    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(root)
        .process(process)
        .mounts(mounts)
        .annotations(annotations)
        .linux(linux)
        .build()
        .map_err(|source| SpecError::Assemble {
            part: "spec",
            source,
        })?;
    spec.set_hostname((!hostname.is_empty()).then(|| hostname.to_string()));
    Ok(spec)
}

/// `process`: argv, environment, identity, capabilities, limits and MAC labels.
fn container_process(
    input: &ContainerSpecInput<'_>,
    hostname: &str,
    capabilities: LinuxCapabilities,
) -> Result<Process, SpecError> {
    let config = input.config;
    let security = &config.linux.security_context;
    let user = user::resolve_user(input.rootfs, security, &input.image.user)?;
    let user = UserBuilder::default()
        .uid(user.uid)
        .gid(user.gid)
        .additional_gids(user.additional_gids)
        .build()
        .map_err(|source| SpecError::Assemble {
            part: "process.user",
            source,
        })?;
    let rlimits = input
        .host
        .rlimits
        .iter()
        .map(|r| {
            PosixRlimitBuilder::default()
                .typ(r.kind)
                .soft(r.soft)
                .hard(r.hard)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| SpecError::Assemble {
            part: "process.rlimits",
            source,
        })?;

    let mut process = ProcessBuilder::default()
        .terminal(config.tty)
        .args(process_args::process_args(config, input.image)?)
        .env(process_args::process_env(config, input.image, hostname))
        .cwd(process_args::process_cwd(config, input.image))
        .user(user)
        .capabilities(capabilities);
    if let Some(adj) = resources::oom_score_adj(&config.linux.resources)? {
        process = process.oom_score_adj(adj);
    }
    // CRI: privileged means no AppArmor or SELinux confinement.
    if !security.privileged {
        if let Some(profile) = &security.apparmor_profile {
            process = process.apparmor_profile(profile.clone());
        }
        if let Some(label) = &security.selinux_label {
            process = process.selinux_label(label.clone());
        }
    }
    let mut process = process.build().map_err(|source| SpecError::Assemble {
        part: "process",
        source,
    })?;
    // No rlimits means the OCI runtime's own, inherited from the daemon.
    process.set_rlimits((!rlimits.is_empty()).then_some(rlimits));
    // Left out rather than false (the same to the OCI spec; the builder's default would be
    // true): libcontainer takes an explicit false for true when it orders seccomp, and
    // would install the filter after dropping the capabilities that installing it
    // without no_new_privs needs.
    process.set_no_new_privileges(security.no_new_privs.then_some(true));
    Ok(process)
}

/// `linux`: namespaces, cgroup, devices, sysctls, masked paths and seccomp.
fn container_linux(
    input: &ContainerSpecInput<'_>,
    effective_capabilities: &Capabilities,
) -> Result<Linux, SpecError> {
    let config = input.config;
    let security = &config.linux.security_context;
    let privileged = security.privileged;
    let devices = devices::container_devices(
        &config.devices,
        privileged,
        input.host.device_dir.as_deref(),
    )?;
    let resources = resources::container_resources(
        &config.linux.resources,
        &resources::ResourcePolicy {
            swap_accounting: input.host.swap_accounting,
            pids_limit: input.host.pids_limit,
        },
        devices.cgroup_rules,
    )?;
    let namespaces = namespaces::container_namespaces(
        &security.namespace_options,
        &input.sandbox.namespaces,
        input.target_pid_namespace,
        input.host.cgroup_v2,
    )?;

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .devices(devices.nodes);
    if !input.cgroups_path.is_empty() {
        linux = linux.cgroups_path(input.cgroups_path);
    }
    if !input.sandbox.sysctls.is_empty() {
        linux = linux.sysctl(input.sandbox.sysctls.clone());
    }
    if let Some(propagation) = mounts::rootfs_propagation(&config.mounts) {
        linux = linux.rootfs_propagation(propagation);
    }
    // CRI: privileged means no seccomp filter.
    if !privileged {
        match &security.seccomp {
            SeccompProfile::Unconfined => {}
            SeccompProfile::RuntimeDefault => {
                linux = linux.seccomp(seccomp::runtime_default_profile(effective_capabilities)?);
            }
            SeccompProfile::Localhost(path) => {
                linux = linux.seccomp(seccomp::localhost_profile(path, effective_capabilities)?);
            }
        }
    }
    let mut linux = linux.build().map_err(|source| SpecError::Assemble {
        part: "linux",
        source,
    })?;
    // CRI: privileged means nothing masked and nothing read-only.
    let paths = |requested: &Option<Vec<String>>, default: &[&str]| {
        if privileged {
            return None;
        }
        Some(match requested {
            Some(paths) => paths.clone(),
            None => default.iter().map(|p| p.to_string()).collect(),
        })
    };
    linux
        .set_masked_paths(paths(&security.masked_paths, &DEFAULT_MASKED_PATHS))
        .set_readonly_paths(paths(&security.readonly_paths, &DEFAULT_READONLY_PATHS));
    Ok(linux)
}

#[cfg(test)]
mod tests;

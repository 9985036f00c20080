//! The plain input types of [`super::container_spec`].
//!
//! They mirror the CRI `runtime.v1` messages field by field (same names, same "zero means
//! unset" conventions, documented where they differ) so the CRI layer's translation is
//! mechanical, while this module stays free of the generated protobuf types (the
//! dependency rule in `lib.rs`). Values the CRI does not carry — where the sandbox pinned
//! its namespaces, the container's rootfs, facts about the host — come in their own
//! structs, so each struct has one owner: the CRI request, the image, the sandbox record,
//! or the daemon.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::PosixRlimitType;

/// Everything [`super::container_spec`] needs to build one container's OCI runtime spec.
#[derive(Debug, Clone, Copy)]
pub struct ContainerSpecInput<'a> {
    /// The CRI `ContainerConfig`, translated.
    pub config: &'a ContainerConfig,
    /// The image's config (OCI image-spec `config`), the fields that shape the process.
    pub image: &'a ImageConfig,
    /// The sandbox the container joins.
    pub sandbox: &'a SandboxContext,
    /// Facts and policy that are the same for every container on this node.
    pub host: &'a HostContext,
    /// Absolute path of the container's prepared root filesystem on the host. Users and
    /// groups are resolved from its `etc/passwd` and `etc/group`.
    pub rootfs: &'a Path,
    /// `linux.cgroupsPath` of the spec; empty leaves it to the OCI runtime.
    pub cgroups_path: &'a str,
    /// The PID namespace of the container named by CRI `NamespaceOption.target_id`,
    /// resolved by the caller (e.g. `/proc/<pid>/ns/pid`); required when the PID mode is
    /// [`NamespaceMode::Target`].
    pub target_pid_namespace: Option<&'a Path>,
}

/// CRI `ContainerConfig` (the fields that shape the OCI spec).
///
/// Not mirrored, because the OCI spec has no place for them: `image` (resolved by the
/// caller into the rootfs and [`ImageConfig`]), `labels` (kept by the runtime's store, not
/// the spec, as containerd does), `log_path`, `stdin`, `stdin_once` (the shim's business)
/// and `stop_signal` (kept with the container record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerConfig {
    /// `metadata.name`.
    pub name: String,
    /// Replaces the image's ENTRYPOINT when non-empty.
    pub command: Vec<String>,
    /// Replaces the image's CMD when non-empty.
    pub args: Vec<String>,
    /// Empty means the image's working dir, else `/`.
    pub working_dir: String,
    /// `envs` as (key, value) pairs in request order.
    pub envs: Vec<KeyValue>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<Device>,
    /// Copied into the spec's annotations.
    pub annotations: HashMap<String, String>,
    pub tty: bool,
    pub linux: LinuxContainerConfig,
}

/// CRI `KeyValue` (an environment variable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// CRI `MountPropagation`; serialisable so that container records can keep it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MountPropagation {
    /// `rprivate`.
    #[default]
    Private,
    /// `rslave`: host mounts show up in the container.
    HostToContainer,
    /// `rshared`: mounts propagate both ways.
    Bidirectional,
}

/// CRI `Mount` (a host path bind-mounted into the container).
///
/// Not mirrored: `selinux_relabel`, `uidMappings`/`gidMappings` (no user namespaces yet)
/// and `image`/`image_sub_path` (an image volume reaches this module as the host path of
/// its prepared snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mount {
    pub container_path: String,
    /// Must exist; symlinks are resolved.
    pub host_path: String,
    pub readonly: bool,
    pub propagation: MountPropagation,
    /// Requires `readonly` and [`MountPropagation::Private`].
    pub recursive_read_only: bool,
}

/// CRI `Device` (a host device node exposed in the container).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub container_path: String,
    pub host_path: String,
    /// Any combination of `r`, `w`, `m`; empty means `rwm`.
    pub permissions: String,
}

/// CRI `LinuxContainerConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxContainerConfig {
    pub resources: LinuxContainerResources,
    pub security_context: LinuxContainerSecurityContext,
}

/// CRI `LinuxContainerResources`: for every field 0 / "" / empty means "not specified".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxContainerResources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
    /// Goes to `process.oomScoreAdj`; 0 leaves the runtime's default.
    pub oom_score_adj: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub hugepage_limits: Vec<HugepageLimit>,
    pub unified: HashMap<String, String>,
    pub memory_swap_limit_in_bytes: i64,
}

/// CRI `HugepageLimit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HugepageLimit {
    /// As in the cgroup file name, e.g. `2MB`.
    pub page_size: String,
    pub limit: u64,
}

/// CRI `NamespaceMode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NamespaceMode {
    /// Shared by the pod's containers (the sandbox's namespace).
    #[default]
    Pod,
    /// Private to this container.
    Container,
    /// The host's namespace.
    Node,
    /// The namespace of another container of the pod (PID only).
    Target,
}

/// CRI `NamespaceOption` of a container's security context. `target_id` is resolved by
/// the caller into [`ContainerSpecInput::target_pid_namespace`]; `userns_options` is not
/// supported yet (containers run in the host user namespace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceOption {
    /// `Pod` or `Node`; the UTS namespace follows it (a host-network pod has the host's).
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    /// `Pod` or `Node`.
    pub ipc: NamespaceMode,
}

/// CRI `Capability`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capability {
    /// Names with or without `CAP_`, any case; `ALL` means every host capability.
    pub add_capabilities: Vec<String>,
    /// Names with or without `CAP_`, any case; `ALL` means every capability.
    pub drop_capabilities: Vec<String>,
    /// Added to every set including ambient (and inheritable, which ambient requires).
    pub add_ambient_capabilities: Vec<String>,
}

/// CRI `SupplementalGroupsPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SupplementalGroupsPolicy {
    /// The user's groups from the image's `/etc/group` plus the requested ones.
    #[default]
    Merge,
    /// Only the primary group and the requested ones.
    Strict,
}

/// CRI `SecurityProfile` for seccomp.
///
/// The default is `Unconfined` because that is what an absent CRI `seccomp` message means
/// (the proto enum's zero value, RuntimeDefault, only applies when the message is set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SeccompProfile {
    #[default]
    Unconfined,
    /// crius's built-in profile (Docker's default, see `seccomp.rs`).
    RuntimeDefault,
    /// A JSON profile file on the node (Docker's profile format or OCI `linux.seccomp`).
    Localhost(PathBuf),
}

/// CRI `LinuxContainerSecurityContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxContainerSecurityContext {
    pub capabilities: Capability,
    pub privileged: bool,
    pub namespace_options: NamespaceOption,
    /// The SELinux process label, already rendered from CRI `selinux_options` by the
    /// caller (which knows the host policy); `None` leaves it unset.
    pub selinux_label: Option<String>,
    /// CRI `run_as_user` (`Int64Value`, so "unset" and 0 differ).
    pub run_as_user: Option<i64>,
    /// CRI `run_as_group`; only valid with `run_as_user` or `run_as_username`.
    pub run_as_group: Option<i64>,
    /// Must resolve through the rootfs's `/etc/passwd`.
    pub run_as_username: String,
    pub readonly_rootfs: bool,
    pub supplemental_groups: Vec<i64>,
    pub supplemental_groups_policy: SupplementalGroupsPolicy,
    pub no_new_privs: bool,
    /// `None`: the default list; `Some(vec![])`: nothing masked.
    pub masked_paths: Option<Vec<String>>,
    /// `None`: the default list; `Some(vec![])`: nothing read-only.
    pub readonly_paths: Option<Vec<String>>,
    pub seccomp: SeccompProfile,
    /// The AppArmor profile name, already chosen by the caller from CRI `apparmor` (it
    /// knows whether AppArmor is enabled); `None` leaves it unset.
    pub apparmor_profile: Option<String>,
}

/// The image config fields that shape the process (OCI image-spec `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` strings.
    pub env: Vec<String>,
    pub working_dir: String,
    /// `user`, `uid`, `user:group`, `uid:gid` (or mixed); empty means root.
    pub user: String,
}

/// What a container takes from the sandbox it joins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxContext {
    pub id: String,
    /// The pod's hostname; set in the spec only when the container gets the sandbox's UTS
    /// namespace (a host-network pod keeps the node's hostname).
    pub hostname: String,
    /// CRI `LinuxPodSandboxConfig.sysctls`.
    pub sysctls: HashMap<String, String>,
    /// Where the sandbox pinned its namespaces.
    pub namespaces: SandboxNamespaces,
    /// Files the sandbox prepared for its containers.
    pub files: SandboxFiles,
}

/// Paths of the sandbox's pinned namespaces (bind mounts or `/proc/<pid>/ns/*`); `None`
/// where the sandbox uses the host's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// Only present when the pod shares one PID namespace.
    pub pid: Option<PathBuf>,
}

/// Host files the sandbox prepared; `None` means the container gets no such mount (for
/// `shm`: a private 64 MiB tmpfs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxFiles {
    pub hosts: Option<PathBuf>,
    pub resolv_conf: Option<PathBuf>,
    pub hostname: Option<PathBuf>,
    pub shm: Option<PathBuf>,
}

/// Facts about the node and the daemon's policy, shared by every container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostContext {
    /// The host's capability bounding set as names (e.g. from `CapBnd` of
    /// `/proc/self/status`). Privileged containers and `add_capabilities: [ALL]` get
    /// exactly these, because asking for one the host lacks (here root has no
    /// `CAP_SYS_RESOURCE`) makes the OCI runtime fail.
    pub capabilities: Vec<String>,
    /// The host runs the unified cgroup v2 hierarchy: containers get a private cgroup
    /// namespace (on v1 runc cannot give them one safely).
    pub cgroup_v2: bool,
    /// The memory cgroup accounts swap (`memory.memsw.*` on v1, `memory.swap.max` on v2);
    /// without it a swap limit would make the OCI runtime fail.
    pub swap_accounting: bool,
    /// The host's `/dev`, whose device nodes privileged containers get; `None` gives them
    /// only the CRI-requested devices (the device cgroup still allows everything).
    pub device_dir: Option<PathBuf>,
    /// `process.rlimits` for every container; empty inherits the OCI runtime's.
    pub rlimits: Vec<Rlimit>,
    /// `linux.resources.pids.limit` for every container (the CRI carries none); 0 or
    /// negative means no limit.
    pub pids_limit: i64,
}

/// One `process.rlimits` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub kind: PosixRlimitType,
    pub soft: u64,
    pub hard: u64,
}

/// containerd's open-files limit (what `LimitNOFILE=infinity` gives a systemd service):
/// the usual choice for [`HostContext::rlimits`]. Raising a hard limit above the
/// daemon's own needs `CAP_SYS_RESOURCE`, which root lacks on some hosts (this one), so
/// the daemon should cap it at its own hard limit there.
pub const DEFAULT_NOFILE_RLIMIT: Rlimit = Rlimit {
    kind: PosixRlimitType::RlimitNofile,
    soft: 1_048_576,
    hard: 1_048_576,
};

/// CRI `DNSConfig`, for [`super::resolv_conf`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    /// `resolv.conf` option words, e.g. `ndots:5`.
    pub options: Vec<String>,
}

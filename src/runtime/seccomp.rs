//! Seccomp filters (`linux.seccomp`): crius's built-in `RuntimeDefault` profile, and
//! `Localhost` profile files.
//!
//! Both are handled in Docker's profile format, a superset of OCI `linux.seccomp` that
//! Kubernetes `Localhost` profiles commonly use: rules may carry `includes`/`excludes`
//! conditions on the container's capabilities and the node's architecture, and an
//! `archMap` lists the architectures to filter for each native one. [`linux_seccomp`]
//! evaluates those conditions for the container and yields plain OCI. An OCI-format file
//! (no conditions) passes through unchanged. `minKernel` conditions count as met: crius
//! needs a kernel newer than any a profile names.
//!
//! `RuntimeDefault` behaves like Docker's and containerd's default profile:
//! - Default action: fail with `EPERM` (`SCMP_ACT_ERRNO`, errno 1), for the native
//!   architecture and its compat ABIs (x86_64: x86_64, x86, x32; aarch64: aarch64, arm).
//! - Allowed: the syscalls ordinary programs need — process lifecycle and credentials,
//!   signals, scheduling, memory, files and directories, polling, timers, sockets, SysV
//!   and POSIX IPC, and `ptrace` (as in Docker's profile since kernel 4.8 stopped it
//!   from bypassing seccomp) — listed in [`ALLOWED`] by theme, plus a few
//!   architecture-specific ones in [`ALLOWED_ON_ARCH`].
//! - Allowed only with a capability: the syscalls that capability exists to guard (e.g.
//!   `mount`, `unshare`, `setns`, `bpf` with `CAP_SYS_ADMIN`, `chroot` with
//!   `CAP_SYS_CHROOT`), listed in [`ALLOWED_WITH_CAPABILITY`].
//! - Argument-filtered: `socket` for any family but `AF_VSOCK`; `personality` only for
//!   the harmless personas; without `CAP_SYS_ADMIN`, `clone` only without namespace flags
//!   and `clone3` fails with `ENOSYS` (its flags live in memory a filter cannot read, and
//!   `ENOSYS` makes glibc fall back to `clone`).
//! - Everything else — kernel modules, `kexec_load`, `reboot`, `swapon`, `acct`,
//!   `open_by_handle_at`, keyrings (`add_key`, `keyctl`), `userfaultfd`, clock setting,
//!   `iopl`, … — fails with `EPERM`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, Capabilities, Capability as OciCapability, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArg, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscallBuilder,
};
use serde::Deserialize;

use super::capabilities::parse_name;
use super::SpecError;

/// `EPERM`: what a denied syscall returns, as in Docker's profile.
const EPERM: u32 = 1;
/// `ENOSYS`: "not implemented", which makes glibc fall back from `clone3` to `clone`.
const ENOSYS: u32 = 38;
/// `AF_VSOCK`: host–guest sockets, a way out of a VM-based sandbox.
const AF_VSOCK: u64 = 40;
/// The `clone` flags that create namespaces: `CLONE_NEWNS | CLONE_NEWCGROUP |
/// CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET`.
const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;
/// `personality` values that change nothing dangerous: `PER_LINUX`, `UNAME26`,
/// `ADDR_NO_RANDOMIZE` (used by debuggers), `UNAME26 | ADDR_NO_RANDOMIZE`, and the query
/// `0xffffffff`.
const SAFE_PERSONAS: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Syscalls every container may make, grouped by what they are for.
const ALLOWED: &[&[&str]] = &[
    // Process lifecycle, identity and credentials.
    &[
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "fork",
        "vfork",
        "wait4",
        "waitid",
        "waitpid",
        "getpid",
        "getppid",
        "gettid",
        "getpgid",
        "getpgrp",
        "getsid",
        "setpgid",
        "setsid",
        "getuid",
        "getuid32",
        "geteuid",
        "geteuid32",
        "getgid",
        "getgid32",
        "getegid",
        "getegid32",
        "getresuid",
        "getresuid32",
        "getresgid",
        "getresgid32",
        "getgroups",
        "getgroups32",
        "setuid",
        "setuid32",
        "setgid",
        "setgid32",
        "setreuid",
        "setreuid32",
        "setregid",
        "setregid32",
        "setresuid",
        "setresuid32",
        "setresgid",
        "setresgid32",
        "setfsuid",
        "setfsuid32",
        "setfsgid",
        "setfsgid32",
        "setgroups",
        "setgroups32",
        "capget",
        "capset",
        "prctl",
        "getpriority",
        "setpriority",
        "getrlimit",
        "ugetrlimit",
        "setrlimit",
        "prlimit64",
        "getrusage",
        "times",
        "umask",
        "set_tid_address",
        "set_robust_list",
        "get_robust_list",
        "rseq",
        "restart_syscall",
        "get_thread_area",
        "set_thread_area",
        "pidfd_open",
        "pidfd_send_signal",
        "process_mrelease",
        "seccomp",
        "landlock_create_ruleset",
        "landlock_add_rule",
        "landlock_restrict_self",
        "ioprio_get",
        "ioprio_set",
        "membarrier",
        "uname",
        "sysinfo",
        "getrandom",
    ],
    // Signals.
    &[
        "kill",
        "tkill",
        "tgkill",
        "rt_sigaction",
        "rt_sigpending",
        "rt_sigprocmask",
        "rt_sigqueueinfo",
        "rt_tgsigqueueinfo",
        "rt_sigreturn",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "rt_sigtimedwait_time64",
        "sigaltstack",
        "signalfd",
        "signalfd4",
        "sigprocmask",
        "sigreturn",
        "pause",
        "alarm",
    ],
    // Scheduling and futexes.
    &[
        "sched_yield",
        "sched_getaffinity",
        "sched_setaffinity",
        "sched_getattr",
        "sched_setattr",
        "sched_getparam",
        "sched_setparam",
        "sched_getscheduler",
        "sched_setscheduler",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_rr_get_interval",
        "sched_rr_get_interval_time64",
        "getcpu",
        "futex",
        "futex_time64",
        "futex_waitv",
    ],
    // Memory.
    &[
        "brk",
        "mmap",
        "mmap2",
        "munmap",
        "mremap",
        "mprotect",
        "madvise",
        "mincore",
        "msync",
        "mlock",
        "mlock2",
        "mlockall",
        "munlock",
        "munlockall",
        "memfd_create",
        "memfd_secret",
        "remap_file_pages",
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
    ],
    // File descriptors and file I/O.
    &[
        "open",
        "openat",
        "openat2",
        "creat",
        "close",
        "close_range",
        "read",
        "readv",
        "pread64",
        "preadv",
        "preadv2",
        "write",
        "writev",
        "pwrite64",
        "pwritev",
        "pwritev2",
        "lseek",
        "_llseek",
        "dup",
        "dup2",
        "dup3",
        "fcntl",
        "fcntl64",
        "flock",
        "fsync",
        "fdatasync",
        "sync",
        "syncfs",
        "sync_file_range",
        "fallocate",
        "truncate",
        "truncate64",
        "ftruncate",
        "ftruncate64",
        "fadvise64",
        "fadvise64_64",
        "readahead",
        "sendfile",
        "sendfile64",
        "splice",
        "tee",
        "vmsplice",
        "copy_file_range",
        "ioctl",
        "pipe",
        "pipe2",
    ],
    // Paths, metadata, directories and extended attributes.
    &[
        "stat",
        "stat64",
        "lstat",
        "lstat64",
        "fstat",
        "fstat64",
        "fstatat64",
        "newfstatat",
        "statx",
        "statfs",
        "statfs64",
        "fstatfs",
        "fstatfs64",
        "access",
        "faccessat",
        "faccessat2",
        "chdir",
        "fchdir",
        "getcwd",
        "getdents",
        "getdents64",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "rmdir",
        "rename",
        "renameat",
        "renameat2",
        "link",
        "linkat",
        "symlink",
        "symlinkat",
        "unlink",
        "unlinkat",
        "readlink",
        "readlinkat",
        "chmod",
        "fchmod",
        "fchmodat",
        "chown",
        "chown32",
        "fchown",
        "fchown32",
        "fchownat",
        "lchown",
        "lchown32",
        "utime",
        "utimes",
        "utimensat",
        "utimensat_time64",
        "futimesat",
        "getxattr",
        "lgetxattr",
        "fgetxattr",
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "listxattr",
        "llistxattr",
        "flistxattr",
        "removexattr",
        "lremovexattr",
        "fremovexattr",
        "name_to_handle_at",
        "inotify_init",
        "inotify_init1",
        "inotify_add_watch",
        "inotify_rm_watch",
        "fanotify_mark",
    ],
    // Waiting for events: poll, select, epoll, eventfd, AIO and io_uring.
    &[
        "poll",
        "ppoll",
        "ppoll_time64",
        "select",
        "_newselect",
        "pselect6",
        "pselect6_time64",
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_ctl_old",
        "epoll_wait",
        "epoll_wait_old",
        "epoll_pwait",
        "epoll_pwait2",
        "eventfd",
        "eventfd2",
        "io_setup",
        "io_destroy",
        "io_submit",
        "io_cancel",
        "io_getevents",
        "io_pgetevents",
        "io_pgetevents_time64",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
    ],
    // Clocks and timers (reading; setting the clock needs CAP_SYS_TIME, and adjtimex
    // without it can only read).
    &[
        "clock_gettime",
        "clock_gettime64",
        "clock_getres",
        "clock_getres_time64",
        "clock_nanosleep",
        "clock_nanosleep_time64",
        "nanosleep",
        "gettimeofday",
        "time",
        "getitimer",
        "setitimer",
        "timer_create",
        "timer_delete",
        "timer_gettime",
        "timer_gettime64",
        "timer_settime",
        "timer_settime64",
        "timer_getoverrun",
        "timerfd_create",
        "timerfd_gettime",
        "timerfd_gettime64",
        "timerfd_settime",
        "timerfd_settime64",
        "adjtimex",
        "clock_adjtime",
        "clock_adjtime64",
    ],
    // Sockets (`socket` itself is argument-filtered).
    &[
        "socketpair",
        "socketcall",
        "bind",
        "connect",
        "listen",
        "accept",
        "accept4",
        "getsockname",
        "getpeername",
        "getsockopt",
        "setsockopt",
        "send",
        "sendto",
        "sendmsg",
        "sendmmsg",
        "recv",
        "recvfrom",
        "recvmsg",
        "recvmmsg",
        "recvmmsg_time64",
        "shutdown",
    ],
    // SysV and POSIX IPC (confined by the IPC namespace).
    &[
        "ipc",
        "msgget",
        "msgctl",
        "msgsnd",
        "msgrcv",
        "semget",
        "semctl",
        "semop",
        "semtimedop",
        "semtimedop_time64",
        "shmget",
        "shmctl",
        "shmat",
        "shmdt",
        "mq_open",
        "mq_unlink",
        "mq_getsetattr",
        "mq_notify",
        "mq_timedsend",
        "mq_timedsend_time64",
        "mq_timedreceive",
        "mq_timedreceive_time64",
    ],
    // Debugging one's own processes: safe since kernel 4.8 stopped ptrace from
    // bypassing seccomp.
    &["ptrace", "process_vm_readv", "process_vm_writev"],
];

/// Syscalls allowed only when the container holds the capability that guards them.
const ALLOWED_WITH_CAPABILITY: &[(OciCapability, &[&str])] = &[
    (
        OciCapability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (OciCapability::DacReadSearch, &["open_by_handle_at"]),
    (OciCapability::SysBoot, &["reboot"]),
    (OciCapability::SysChroot, &["chroot"]),
    (
        OciCapability::SysModule,
        &["init_module", "finit_module", "delete_module"],
    ),
    (OciCapability::SysPacct, &["acct"]),
    (
        OciCapability::SysPtrace,
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    (OciCapability::SysRawio, &["iopl", "ioperm"]),
    (
        OciCapability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (OciCapability::SysTtyConfig, &["vhangup"]),
    (
        OciCapability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (OciCapability::Syslog, &["syslog"]),
    (OciCapability::Bpf, &["bpf"]),
    (OciCapability::Perfmon, &["perf_event_open"]),
];

/// Syscalls that exist only on some architectures, keyed by Go architecture names (the
/// names Docker-format profiles use).
const ALLOWED_ON_ARCH: &[(&[&str], &[&str])] = &[
    (&["amd64", "x32"], &["arch_prctl"]),
    (&["amd64", "x32", "386"], &["modify_ldt"]),
    (
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
    ),
    (&["riscv64"], &["riscv_flush_icache"]),
    (
        &["s390", "s390x"],
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
    ),
];

/// The OCI seccomp filter of a `Localhost` profile file, for a container with
/// `capabilities`.
pub(super) fn localhost_profile(
    path: &Path,
    capabilities: &Capabilities,
) -> Result<LinuxSeccomp, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::SeccompProfileRead {
        path: path.to_path_buf(),
        source,
    })?;
    let profile: Profile =
        serde_json::from_str(&text).map_err(|source| SpecError::SeccompProfileParse {
            path: path.to_path_buf(),
            source,
        })?;
    linux_seccomp(profile, capabilities).map_err(|source| SpecError::Assemble {
        part: "linux.seccomp",
        source,
    })
}

/// The OCI seccomp filter of the built-in `RuntimeDefault` profile.
pub(super) fn runtime_default_profile(
    capabilities: &Capabilities,
) -> Result<LinuxSeccomp, SpecError> {
    linux_seccomp(runtime_default(), capabilities).map_err(|source| SpecError::Assemble {
        part: "linux.seccomp",
        source,
    })
}

/// A profile in Docker's format (OCI `linux.seccomp` plus conditions and `archMap`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<Arch>>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMapEntry>>,
    #[serde(default)]
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<SyscallRule>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SyscallRule {
    #[serde(default)]
    names: Option<Vec<String>>,
    /// Docker's older single-name form.
    #[serde(default)]
    name: Option<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Option<Condition>,
    #[serde(default)]
    excludes: Option<Condition>,
}

/// When a rule applies: `includes` needs every listed capability and one of the listed
/// architectures; `excludes` drops the rule on any listed capability or architecture.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
}

/// The node's architecture as Go names it (Docker-format `arches`) and as seccomp does.
fn native_arch() -> (&'static str, Option<Arch>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", Some(Arch::ScmpArchX86_64)),
        "x86" => ("386", Some(Arch::ScmpArchX86)),
        "aarch64" => ("arm64", Some(Arch::ScmpArchAarch64)),
        "arm" => ("arm", Some(Arch::ScmpArchArm)),
        "riscv64" => ("riscv64", Some(Arch::ScmpArchRiscv64)),
        "s390x" => ("s390x", Some(Arch::ScmpArchS390x)),
        "loongarch64" => ("loong64", Some(Arch::ScmpArchLoongarch64)),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", Some(Arch::ScmpArchPpc64le)),
        other => (other, None),
    }
}

/// Evaluates the profile's conditions for a container with `capabilities` on this node.
fn linux_seccomp(
    profile: Profile,
    capabilities: &Capabilities,
) -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let (go_arch, native) = native_arch();
    let architectures = match (profile.architectures, profile.arch_map) {
        (Some(explicit), _) if !explicit.is_empty() => Some(explicit),
        (_, Some(map)) => map
            .into_iter()
            .find(|entry| Some(entry.architecture) == native)
            .map(|entry| {
                let mut arches = vec![entry.architecture];
                arches.extend(entry.sub_architectures.unwrap_or_default());
                arches
            }),
        _ => None,
    };

    let holds = |name: &String| parse_name(name).is_some_and(|c| capabilities.contains(&c));
    let on_arch = |arches: &Vec<String>| arches.iter().any(|a| a == go_arch);
    let mut syscalls = Vec::new();
    for rule in profile.syscalls.unwrap_or_default() {
        let includes = rule.includes.unwrap_or_default();
        let excludes = rule.excludes.unwrap_or_default();
        let included = includes
            .caps
            .as_ref()
            .is_none_or(|caps| caps.iter().all(holds))
            && includes
                .arches
                .as_ref()
                .is_none_or(|arches| arches.is_empty() || on_arch(arches));
        let excluded = excludes
            .caps
            .as_ref()
            .is_some_and(|caps| caps.iter().any(holds))
            || excludes.arches.as_ref().is_some_and(on_arch);
        if !included || excluded {
            continue;
        }
        let mut names = rule.names.unwrap_or_default();
        names.extend(rule.name);
        if names.is_empty() {
            continue;
        }
        let mut syscall = LinuxSyscallBuilder::default()
            .names(names)
            .action(rule.action);
        if let Some(errno) = rule.errno_ret {
            syscall = syscall.errno_ret(errno);
        }
        if let Some(args) = rule.args.filter(|a| !a.is_empty()) {
            syscall = syscall.args(args);
        }
        syscalls.push(syscall.build()?);
    }

    let mut seccomp = LinuxSeccompBuilder::default()
        .default_action(profile.default_action)
        .syscalls(syscalls);
    if let Some(errno) = profile.default_errno_ret {
        seccomp = seccomp.default_errno_ret(errno);
    }
    if let Some(architectures) = architectures {
        seccomp = seccomp.architectures(architectures);
    }
    if let Some(flags) = profile.flags.filter(|f| !f.is_empty()) {
        seccomp = seccomp.flags(flags);
    }
    if let Some(path) = profile.listener_path {
        seccomp = seccomp.listener_path(path);
    }
    if let Some(metadata) = profile.listener_metadata {
        seccomp = seccomp.listener_metadata(metadata);
    }
    seccomp.build()
}

/// The built-in profile, as data in Docker's format.
fn runtime_default() -> Profile {
    let allow = |names: &[&str]| SyscallRule {
        names: Some(names.iter().map(|n| n.to_string()).collect()),
        name: None,
        action: LinuxSeccompAction::ScmpActAllow,
        errno_ret: None,
        args: None,
        includes: None,
        excludes: None,
    };
    let caps_condition = |cap: OciCapability| {
        Some(Condition {
            caps: Some(vec![format!("CAP_{cap}")]),
            arches: None,
        })
    };
    let arg = |index: usize, value: u64, op: LinuxSeccompOperator| {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .value(value)
            .op(op)
            .build()
    };

    let mut rules: Vec<SyscallRule> = ALLOWED.iter().map(|group| allow(group)).collect();
    for (cap, names) in ALLOWED_WITH_CAPABILITY {
        rules.push(SyscallRule {
            includes: caps_condition(*cap),
            ..allow(names)
        });
    }
    for (arches, names) in ALLOWED_ON_ARCH {
        rules.push(SyscallRule {
            includes: Some(Condition {
                caps: None,
                arches: Some(arches.iter().map(|a| a.to_string()).collect()),
            }),
            ..allow(names)
        });
    }
    // The builder cannot fail for these (no required fields), but stay total anyway:
    // an argument rule that cannot be built is left out, which denies more, not less.
    if let Ok(not_vsock) = arg(0, AF_VSOCK, LinuxSeccompOperator::ScmpCmpNe) {
        rules.push(SyscallRule {
            args: Some(vec![not_vsock]),
            ..allow(&["socket"])
        });
    }
    for persona in SAFE_PERSONAS {
        if let Ok(is_persona) = arg(0, persona, LinuxSeccompOperator::ScmpCmpEq) {
            rules.push(SyscallRule {
                args: Some(vec![is_persona]),
                ..allow(&["personality"])
            });
        }
    }
    // s390 passes the clone flags second; everyone else first.
    let clone_flags_index: usize = if native_arch().0.starts_with("s390") {
        1
    } else {
        0
    };
    if let Ok(no_namespace_flags) = LinuxSeccompArgBuilder::default()
        .index(clone_flags_index)
        .value(CLONE_NAMESPACE_FLAGS)
        .value_two(0u64)
        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
        .build()
    {
        rules.push(SyscallRule {
            args: Some(vec![no_namespace_flags]),
            excludes: caps_condition(OciCapability::SysAdmin),
            ..allow(&["clone"])
        });
    }
    rules.push(SyscallRule {
        action: LinuxSeccompAction::ScmpActErrno,
        errno_ret: Some(ENOSYS),
        excludes: caps_condition(OciCapability::SysAdmin),
        ..allow(&["clone3"])
    });

    Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(EPERM),
        architectures: None,
        arch_map: Some(vec![
            ArchMapEntry {
                architecture: Arch::ScmpArchX86_64,
                sub_architectures: Some(vec![Arch::ScmpArchX86, Arch::ScmpArchX32]),
            },
            ArchMapEntry {
                architecture: Arch::ScmpArchAarch64,
                sub_architectures: Some(vec![Arch::ScmpArchArm]),
            },
            ArchMapEntry {
                architecture: Arch::ScmpArchS390x,
                sub_architectures: Some(vec![Arch::ScmpArchS390]),
            },
            ArchMapEntry {
                architecture: Arch::ScmpArchRiscv64,
                sub_architectures: None,
            },
        ]),
        flags: None,
        listener_path: None,
        listener_metadata: None,
        syscalls: Some(rules),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxSyscall;
    use std::collections::HashSet;

    /// Every syscall name a filter allows unconditionally (no argument filter).
    fn allowed_names(seccomp: &LinuxSeccomp) -> HashSet<String> {
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().iter().cloned())
            .collect()
    }

    fn caps(names: &[OciCapability]) -> Capabilities {
        names.iter().copied().collect()
    }

    fn rules_for<'s>(seccomp: &'s LinuxSeccomp, name: &str) -> Vec<&'s LinuxSyscall> {
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == name))
            .collect()
    }

    #[test]
    fn default_denies_with_eperm_and_allows_the_basics() {
        let seccomp = runtime_default_profile(&Capabilities::new()).unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(seccomp.default_errno_ret(), Some(EPERM));
        let allowed = allowed_names(&seccomp);
        for name in [
            "read",
            "write",
            "openat",
            "execve",
            "exit_group",
            "futex",
            "wait4",
        ] {
            assert!(allowed.contains(name), "{name}");
        }
        for name in [
            "mount",
            "unshare",
            "setns",
            "init_module",
            "kexec_load",
            "reboot",
            "keyctl",
            "add_key",
            "open_by_handle_at",
            "bpf",
            "swapon",
            "acct",
            "chroot",
        ] {
            assert!(!allowed.contains(name), "{name} must be denied");
        }
    }

    #[test]
    fn architectures_follow_the_native_one() {
        let seccomp = runtime_default_profile(&Capabilities::new()).unwrap();
        let arches = seccomp.architectures().clone().unwrap_or_default();
        match std::env::consts::ARCH {
            "x86_64" => assert_eq!(
                arches,
                [Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
            ),
            "aarch64" => assert_eq!(arches, [Arch::ScmpArchAarch64, Arch::ScmpArchArm]),
            _ => {}
        }
        if std::env::consts::ARCH == "x86_64" {
            assert!(allowed_names(&seccomp).contains("arch_prctl"));
            assert!(!allowed_names(&seccomp).contains("set_tls"));
        }
    }

    #[test]
    fn capabilities_unlock_their_syscalls() {
        let seccomp =
            runtime_default_profile(&caps(&[OciCapability::SysAdmin, OciCapability::SysChroot]))
                .unwrap();
        let allowed = allowed_names(&seccomp);
        for name in ["mount", "unshare", "setns", "clone", "clone3", "chroot"] {
            assert!(allowed.contains(name), "{name}");
        }
        assert!(!allowed.contains("reboot"));
        // With CAP_SYS_ADMIN neither the clone flag filter nor the clone3 ENOSYS applies.
        assert!(rules_for(&seccomp, "clone3")
            .iter()
            .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow));
        assert_eq!(rules_for(&seccomp, "clone").len(), 1);
    }

    #[test]
    fn without_sys_admin_clone_is_filtered_and_clone3_is_enosys() {
        let seccomp = runtime_default_profile(&Capabilities::new()).unwrap();
        let clone = rules_for(&seccomp, "clone");
        assert_eq!(clone.len(), 1);
        let args = clone[0].args().clone().unwrap_or_default();
        assert_eq!(args[0].op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!(args[0].value(), 0x7E02_0000);
        assert_eq!(args[0].value_two(), Some(0));
        let clone3 = rules_for(&seccomp, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(ENOSYS));
    }

    #[test]
    fn socket_and_personality_are_argument_filtered() {
        let seccomp = runtime_default_profile(&Capabilities::new()).unwrap();
        let socket = rules_for(&seccomp, "socket");
        assert_eq!(socket.len(), 1);
        let arg = socket[0].args().clone().unwrap_or_default()[0];
        assert_eq!(
            (arg.value(), arg.op()),
            (AF_VSOCK, LinuxSeccompOperator::ScmpCmpNe)
        );
        assert_eq!(
            rules_for(&seccomp, "personality").len(),
            SAFE_PERSONAS.len()
        );
    }

    #[test]
    fn no_syscall_is_both_unconditionally_allowed_and_listed_twice_in_one_group() {
        for group in ALLOWED {
            let unique: HashSet<_> = group.iter().collect();
            assert_eq!(unique.len(), group.len());
        }
        let everywhere: HashSet<&str> = ALLOWED.iter().flat_map(|g| g.iter().copied()).collect();
        for (_, names) in ALLOWED_WITH_CAPABILITY {
            for name in *names {
                assert!(
                    !everywhere.contains(name),
                    "{name} is gated and also allowed"
                );
            }
        }
    }

    #[test]
    fn localhost_docker_format_profile_evaluates_conditions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.json");
        std::fs::write(
            &path,
            r#"{
                "defaultAction": "SCMP_ACT_ERRNO",
                "archMap": [
                    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": null}
                ],
                "syscalls": [
                    {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                    {"names": ["mount"], "action": "SCMP_ACT_ALLOW",
                     "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                    {"names": ["unshare"], "action": "SCMP_ACT_ALLOW",
                     "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                    {"name": "getpid", "action": "SCMP_ACT_LOG", "comment": "old form"}
                ]
            }"#,
        )
        .unwrap();
        let plain = localhost_profile(&path, &Capabilities::new()).unwrap();
        let allowed = allowed_names(&plain);
        assert!(allowed.contains("read") && allowed.contains("unshare"));
        assert!(!allowed.contains("mount"));
        assert_eq!(
            rules_for(&plain, "getpid")[0].action(),
            LinuxSeccompAction::ScmpActLog
        );
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                plain.architectures().clone().unwrap_or_default(),
                [Arch::ScmpArchX86_64, Arch::ScmpArchX86]
            );
        }
        let admin = localhost_profile(&path, &caps(&[OciCapability::SysAdmin])).unwrap();
        let allowed = allowed_names(&admin);
        assert!(allowed.contains("mount") && !allowed.contains("unshare"));
    }

    #[test]
    fn localhost_oci_format_profile_passes_through() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("oci.json");
        std::fs::write(
            &path,
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                              "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]}]}"#,
        )
        .unwrap();
        let seccomp = localhost_profile(&path, &Capabilities::new()).unwrap();
        assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(
            seccomp.architectures().clone().unwrap_or_default(),
            [Arch::ScmpArchX86_64]
        );
        let chmod = rules_for(&seccomp, "chmod");
        assert_eq!(chmod[0].errno_ret(), Some(13));
        assert_eq!(chmod[0].args().clone().unwrap_or_default()[0].value(), 511);
    }

    #[test]
    fn localhost_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = localhost_profile(&missing, &Capabilities::new()).unwrap_err();
        assert!(matches!(err, SpecError::SeccompProfileRead { .. }));
        assert!(err.to_string().contains("missing.json"), "{err}");

        let invalid = dir.path().join("invalid.json");
        std::fs::write(&invalid, r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#).unwrap();
        let err = localhost_profile(&invalid, &Capabilities::new()).unwrap_err();
        assert!(matches!(err, SpecError::SeccompProfileParse { .. }));
        assert!(err.to_string().contains("invalid.json"), "{err}");
    }
}

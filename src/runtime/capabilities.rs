//! The container process's Linux capabilities.
//!
//! Rules (containerd's CRI `WithCapabilities` and `WithPrivileged`, CRI `Capability`):
//! - Privileged: bounding, effective and permitted are the host's bounding set, exactly;
//!   asking runc for a capability the host lacks fails the container.
//! - Otherwise Docker's default set, then in this order: `ALL` in `add_capabilities` →
//!   the host's set, `ALL` in `drop_capabilities` → nothing, the named adds, the named
//!   drops; so `drop: [ALL], add: [NET_BIND_SERVICE]` leaves exactly that one.
//! - `add_ambient_capabilities` go into every set including ambient and inheritable
//!   (the kernel only keeps an ambient capability that is also inheritable and
//!   permitted); otherwise inheritable and ambient are empty, so a file capability
//!   cannot be picked up across `execve` by a non-root user.
//! - Names are accepted in any case, with or without the `CAP_` prefix.

use std::str::FromStr;

use oci_spec::runtime::{Capabilities, Capability as OciCapability, LinuxCapabilities};

use super::input::{Capability, HostContext};
use super::SpecError;

/// The capabilities Docker and containerd give a non-privileged container.
const DEFAULT_CAPABILITIES: [OciCapability; 14] = [
    OciCapability::Chown,
    OciCapability::DacOverride,
    OciCapability::Fsetid,
    OciCapability::Fowner,
    OciCapability::Mknod,
    OciCapability::NetRaw,
    OciCapability::Setgid,
    OciCapability::Setuid,
    OciCapability::Setfcap,
    OciCapability::Setpcap,
    OciCapability::NetBindService,
    OciCapability::SysChroot,
    OciCapability::Kill,
    OciCapability::AuditWrite,
];

/// Capability names by bit number (linux/capability.h), for reading `CapBnd`.
const CAPABILITY_BITS: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The names of the capabilities in this process's bounding set (`CapBnd` in
/// /proc/self/status): what a privileged container may have on this host, which is less
/// than the full list where the node itself runs without some (e.g. CAP_SYS_RESOURCE).
pub fn host_capabilities() -> std::io::Result<Vec<String>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let mask = status
        .lines()
        .find_map(|line| line.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| std::io::Error::other("no CapBnd line in /proc/self/status"))?;
    Ok(CAPABILITY_BITS
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, name)| name.to_string())
        .collect())
}

/// The capability sets of a container's process.
pub(super) fn container_capabilities(
    requested: &Capability,
    privileged: bool,
    host: &HostContext,
) -> Result<LinuxCapabilities, SpecError> {
    let host_set = parse_names("host.capabilities", &host.capabilities)?;
    if privileged {
        return assemble(host_set, Capabilities::new());
    }

    let mut set: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    if requested.add_capabilities.iter().any(|n| is_all(n)) {
        set = host_set;
    }
    if requested.drop_capabilities.iter().any(|n| is_all(n)) {
        set.clear();
    }
    set.extend(parse_names(
        "capabilities.add_capabilities",
        &requested.add_capabilities,
    )?);
    for dropped in parse_names(
        "capabilities.drop_capabilities",
        &requested.drop_capabilities,
    )? {
        set.remove(&dropped);
    }
    let ambient = parse_names(
        "capabilities.add_ambient_capabilities",
        &requested.add_ambient_capabilities,
    )?;
    set.extend(ambient.iter().copied());
    assemble(set, ambient)
}

fn assemble(set: Capabilities, ambient: Capabilities) -> Result<LinuxCapabilities, SpecError> {
    oci_spec::runtime::LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(ambient.clone())
        .ambient(ambient)
        .build()
        .map_err(|source| SpecError::Assemble {
            part: "process.capabilities",
            source,
        })
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// Parses capability names, skipping `ALL` (handled by the caller).
pub(super) fn parse_names(
    field: &'static str,
    names: &[String],
) -> Result<Capabilities, SpecError> {
    names
        .iter()
        .filter(|n| !is_all(n))
        .map(|name| {
            parse_name(name).ok_or_else(|| SpecError::UnknownCapability {
                field,
                name: name.clone(),
            })
        })
        .collect()
}

/// `chown`, `CHOWN`, `cap_chown` and `CAP_CHOWN` are all `Capability::Chown`.
pub(super) fn parse_name(name: &str) -> Option<OciCapability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    OciCapability::from_str(bare).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostContext {
        HostContext {
            // Like this host: everything but CAP_SYS_RESOURCE.
            capabilities: [
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
                "CAP_SYS_ADMIN",
                "CAP_NET_ADMIN",
                "CAP_SYS_PTRACE",
            ]
            .map(String::from)
            .to_vec(),
            ..Default::default()
        }
    }

    fn caps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn set(names: &[OciCapability]) -> Capabilities {
        names.iter().copied().collect()
    }

    fn effective(caps: &LinuxCapabilities) -> Capabilities {
        caps.effective().clone().unwrap_or_default()
    }

    #[test]
    fn default_set_on_every_set_but_inheritable_and_ambient() {
        let caps = container_capabilities(&Capability::default(), false, &host()).unwrap();
        let default = set(&DEFAULT_CAPABILITIES);
        assert_eq!(caps.bounding().as_ref(), Some(&default));
        assert_eq!(caps.effective().as_ref(), Some(&default));
        assert_eq!(caps.permitted().as_ref(), Some(&default));
        assert_eq!(caps.inheritable().as_ref(), Some(&Capabilities::new()));
        assert_eq!(caps.ambient().as_ref(), Some(&Capabilities::new()));
    }

    #[test]
    fn names_with_and_without_prefix_in_any_case() {
        let requested = Capability {
            add_capabilities: caps(&["sys_admin", "CAP_NET_ADMIN"]),
            drop_capabilities: caps(&["cap_chown", "Kill"]),
            ..Default::default()
        };
        let got = effective(&container_capabilities(&requested, false, &host()).unwrap());
        assert!(got.contains(&OciCapability::SysAdmin));
        assert!(got.contains(&OciCapability::NetAdmin));
        assert!(!got.contains(&OciCapability::Chown));
        assert!(!got.contains(&OciCapability::Kill));
        assert!(got.contains(&OciCapability::Setuid));
    }

    #[test]
    fn drop_all_then_add_one() {
        let requested = Capability {
            add_capabilities: caps(&["NET_BIND_SERVICE"]),
            drop_capabilities: caps(&["ALL"]),
            ..Default::default()
        };
        let got = effective(&container_capabilities(&requested, false, &host()).unwrap());
        assert_eq!(got, set(&[OciCapability::NetBindService]));
    }

    #[test]
    fn add_all_gives_the_host_set_minus_drops() {
        let requested = Capability {
            add_capabilities: caps(&["all"]),
            drop_capabilities: caps(&["SYS_PTRACE"]),
            ..Default::default()
        };
        let got = effective(&container_capabilities(&requested, false, &host()).unwrap());
        let mut expected = parse_names("t", &host().capabilities).unwrap();
        expected.remove(&OciCapability::SysPtrace);
        assert_eq!(got, expected);
        assert!(!got.contains(&OciCapability::SysResource));
    }

    #[test]
    fn add_all_and_drop_all_leaves_nothing() {
        let requested = Capability {
            add_capabilities: caps(&["ALL"]),
            drop_capabilities: caps(&["ALL"]),
            ..Default::default()
        };
        let got = effective(&container_capabilities(&requested, false, &host()).unwrap());
        assert!(got.is_empty());
    }

    #[test]
    fn privileged_gets_exactly_the_host_set() {
        let requested = Capability {
            drop_capabilities: caps(&["ALL"]),
            ..Default::default()
        };
        let got = container_capabilities(&requested, true, &host()).unwrap();
        let expected = parse_names("t", &host().capabilities).unwrap();
        assert_eq!(got.bounding().as_ref(), Some(&expected));
        assert_eq!(got.permitted().as_ref(), Some(&expected));
        assert_eq!(got.inheritable().as_ref(), Some(&Capabilities::new()));
        assert!(!expected.contains(&OciCapability::SysResource));
    }

    #[test]
    fn ambient_capabilities_are_inheritable_too() {
        let requested = Capability {
            add_ambient_capabilities: caps(&["NET_ADMIN"]),
            ..Default::default()
        };
        let got = container_capabilities(&requested, false, &host()).unwrap();
        let ambient = set(&[OciCapability::NetAdmin]);
        assert_eq!(got.ambient().as_ref(), Some(&ambient));
        assert_eq!(got.inheritable().as_ref(), Some(&ambient));
        assert!(effective(&got).contains(&OciCapability::NetAdmin));
    }

    #[test]
    fn unknown_names_are_errors_naming_the_field() {
        let requested = Capability {
            add_capabilities: caps(&["CAP_FLY"]),
            ..Default::default()
        };
        let err = container_capabilities(&requested, false, &host()).unwrap_err();
        assert!(err.to_string().contains("add_capabilities"), "{err}");
        assert!(err.to_string().contains("CAP_FLY"), "{err}");
    }
}

//! Device nodes (`linux.devices`) and the device cgroup (`linux.resources.devices`).
//!
//! Rules (runc's `AllowedDevices`, containerd's `WithDevices`/`WithPrivileged`):
//! - Non-privileged: deny everything, then allow `mknod` of any node (creating one is
//!   harmless, using it is what the rules guard), the standard nodes runc creates itself
//!   (`null`, `zero`, `full`, `random`, `urandom`, `tty`, `ptmx`) and the pty slaves
//!   (`136:*`), then each CRI device with its permissions.
//! - Privileged: every device allowed, and every device node of the host's `/dev` (when
//!   [`super::HostContext::device_dir`] is given) created in the container, as
//!   `docker run --privileged` does.
//! - A CRI device's type, major and minor come from the host node (`stat`, symlinks
//!   followed, so `/dev/disk/by-id/…` works); its mode, uid and gid too.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
};

use super::input::Device;
use super::SpecError;

/// Directories of `/dev` that a privileged container must not copy: they are mounted
/// fresh (`pts`, `shm`, `mqueue`) or are per-process views (`fd`).
const SKIPPED_HOST_DEV_DIRS: [&str; 4] = ["pts", "shm", "mqueue", "fd"];

/// `(type, major, minor)` of the nodes every container may use; `None` is `*`.
const DEFAULT_ALLOWED: [(LinuxDeviceType, Option<i64>, Option<i64>); 8] = [
    (LinuxDeviceType::C, Some(1), Some(3)), // null
    (LinuxDeviceType::C, Some(1), Some(5)), // zero
    (LinuxDeviceType::C, Some(1), Some(7)), // full
    (LinuxDeviceType::C, Some(1), Some(8)), // random
    (LinuxDeviceType::C, Some(1), Some(9)), // urandom
    (LinuxDeviceType::C, Some(5), Some(0)), // tty
    (LinuxDeviceType::C, Some(5), Some(2)), // ptmx
    (LinuxDeviceType::C, Some(136), None),  // pts/*
];

/// The device nodes and cgroup rules of a container.
#[derive(Debug)]
pub(super) struct DeviceConfig {
    pub nodes: Vec<LinuxDevice>,
    pub cgroup_rules: Vec<LinuxDeviceCgroup>,
}

pub(super) fn container_devices(
    requested: &[Device],
    privileged: bool,
    host_device_dir: Option<&Path>,
) -> Result<DeviceConfig, SpecError> {
    let mut nodes = Vec::new();
    let mut cgroup_rules = Vec::new();
    for (index, device) in requested.iter().enumerate() {
        let (node, rule) = cri_device(index, device)?;
        nodes.push(node);
        cgroup_rules.push(rule);
    }
    if privileged {
        if let Some(dir) = host_device_dir {
            for node in host_device_nodes(dir)? {
                // A CRI device at the same path wins: it may carry narrower permissions
                // for the node in the requested place.
                if !nodes.iter().any(|n| n.path() == node.path()) {
                    nodes.push(node);
                }
            }
        }
        let allow_all = cgroup_rule(true, LinuxDeviceType::A, None, None, "rwm")?;
        return Ok(DeviceConfig {
            nodes,
            cgroup_rules: vec![allow_all],
        });
    }

    let mut rules = vec![
        cgroup_rule(false, LinuxDeviceType::A, None, None, "rwm")?,
        cgroup_rule(true, LinuxDeviceType::C, None, None, "m")?,
        cgroup_rule(true, LinuxDeviceType::B, None, None, "m")?,
    ];
    for (typ, major, minor) in DEFAULT_ALLOWED {
        rules.push(cgroup_rule(true, typ, major, minor, "rwm")?);
    }
    rules.append(&mut cgroup_rules);
    Ok(DeviceConfig {
        nodes,
        cgroup_rules: rules,
    })
}

fn cri_device(
    index: usize,
    device: &Device,
) -> Result<(LinuxDevice, LinuxDeviceCgroup), SpecError> {
    let permissions = if device.permissions.is_empty() {
        "rwm"
    } else {
        device.permissions.as_str()
    };
    if !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(SpecError::InvalidDevice {
            index,
            field: "permissions",
            reason: format!("{permissions:?} is not a combination of r, w and m"),
        });
    }
    if !Path::new(&device.container_path).is_absolute() {
        return Err(SpecError::InvalidDevice {
            index,
            field: "container_path",
            reason: format!("{:?} is not an absolute path", device.container_path),
        });
    }
    let host_path = PathBuf::from(&device.host_path);
    let meta = std::fs::metadata(&host_path).map_err(|source| SpecError::DeviceHostPath {
        index,
        path: host_path.clone(),
        source,
    })?;
    let Some(typ) = device_type(&meta) else {
        return Err(SpecError::InvalidDevice {
            index,
            field: "host_path",
            reason: format!("{} is not a character or block device", host_path.display()),
        });
    };
    let node = device_node(&device.container_path, typ, &meta)?;
    let rule = cgroup_rule(
        true,
        typ,
        Some(node.major()),
        Some(node.minor()),
        permissions,
    )?;
    Ok((node, rule))
}

/// Every character and block device under the host's `dev_dir`, at the same path in
/// the container.
fn host_device_nodes(dev_dir: &Path) -> Result<Vec<LinuxDevice>, SpecError> {
    let mut nodes = Vec::new();
    let mut pending = vec![dev_dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| SpecError::HostDevices {
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| SpecError::HostDevices {
                path: dir.clone(),
                source,
            })?;
            let path = entry.path();
            // lstat: symlinks (e.g. /dev/fd, /dev/stdin) are not devices to create.
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                // Device nodes come and go (hotplug); one that vanished is not an error.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(SpecError::HostDevices { path, source }),
            };
            if meta.is_dir() {
                let skipped = dir == dev_dir
                    && SKIPPED_HOST_DEV_DIRS
                        .iter()
                        .any(|s| entry.file_name() == *s);
                if !skipped {
                    pending.push(path);
                }
                continue;
            }
            let Some(typ) = device_type(&meta) else {
                continue;
            };
            // The console is the container's own (runc sets it up for a terminal).
            if path == dev_dir.join("console") {
                continue;
            }
            let Ok(relative) = path.strip_prefix(dev_dir) else {
                continue;
            };
            let container_path = Path::new("/dev").join(relative);
            nodes.push(device_node(
                &container_path.display().to_string(),
                typ,
                &meta,
            )?);
        }
    }
    nodes.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(nodes)
}

fn device_type(meta: &Metadata) -> Option<LinuxDeviceType> {
    let file_type = meta.file_type();
    if file_type.is_char_device() {
        Some(LinuxDeviceType::C)
    } else if file_type.is_block_device() {
        Some(LinuxDeviceType::B)
    } else {
        None
    }
}

fn device_node(
    container_path: &str,
    typ: LinuxDeviceType,
    meta: &Metadata,
) -> Result<LinuxDevice, SpecError> {
    let (major, minor) = major_minor(meta.rdev());
    LinuxDeviceBuilder::default()
        .path(container_path)
        .typ(typ)
        .major(major)
        .minor(minor)
        .file_mode(meta.mode() & 0o777)
        .uid(meta.uid())
        .gid(meta.gid())
        .build()
        .map_err(|source| SpecError::Assemble {
            part: "linux.devices",
            source,
        })
}

/// glibc's `major()`/`minor()` for a 64-bit `dev_t`: 12 bits of major and 20 of minor,
/// split across the word for compatibility with the old 8:8 encoding.
fn major_minor(rdev: u64) -> (i64, i64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & 0xffff_f000);
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xffff_ff00);
    // Both fit in 32 bits by construction, so they fit in i64.
    (major as i64, minor as i64)
}

fn cgroup_rule(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut builder = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .typ(typ)
        .access(access);
    if let Some(major) = major {
        builder = builder.major(major);
    }
    if let Some(minor) = minor {
        builder = builder.minor(minor);
    }
    builder.build().map_err(|source| SpecError::Assemble {
        part: "linux.resources.devices",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn null_device(container_path: &str, permissions: &str) -> Device {
        Device {
            container_path: container_path.into(),
            host_path: "/dev/null".into(),
            permissions: permissions.into(),
        }
    }

    fn rule_strings(rules: &[LinuxDeviceCgroup]) -> Vec<String> {
        rules
            .iter()
            .map(|r| format!("{} {r}", if r.allow() { "allow" } else { "deny" }))
            .collect()
    }

    /// glibc's `makedev()`, the inverse of [`major_minor`].
    fn makedev(major: u64, minor: u64) -> u64 {
        ((major & 0xfff) << 8)
            | ((major & 0xffff_f000) << 32)
            | (minor & 0xff)
            | ((minor & 0xffff_ff00) << 12)
    }

    #[test]
    fn major_minor_decoding() {
        assert_eq!(major_minor(0x0103), (1, 3));
        // Both need the high parts of the encoding.
        assert_eq!(major_minor(makedev(259, 65536)), (259, 65536));
        assert_eq!(major_minor(makedev(4095 + 1, 255 + 1)), (4096, 256));
    }

    #[test]
    fn cri_device_from_dev_null() {
        let config = container_devices(&[null_device("/dev/mynull", "rw")], false, None).unwrap();
        assert_eq!(config.nodes.len(), 1);
        let node = &config.nodes[0];
        assert_eq!(node.path(), Path::new("/dev/mynull"));
        assert_eq!(node.typ(), LinuxDeviceType::C);
        assert_eq!((node.major(), node.minor()), (1, 3));
        assert_eq!(node.file_mode(), Some(0o666));
        let rules = rule_strings(&config.cgroup_rules);
        assert_eq!(rules.first().map(String::as_str), Some("deny a *:* rwm"));
        assert_eq!(rules.last().map(String::as_str), Some("allow c 1:3 rw"));
    }

    #[test]
    fn default_allow_list_follows_deny_all() {
        let config = container_devices(&[], false, None).unwrap();
        assert!(config.nodes.is_empty());
        assert_eq!(
            rule_strings(&config.cgroup_rules),
            [
                "deny a *:* rwm",
                "allow c *:* m",
                "allow b *:* m",
                "allow c 1:3 rwm",
                "allow c 1:5 rwm",
                "allow c 1:7 rwm",
                "allow c 1:8 rwm",
                "allow c 1:9 rwm",
                "allow c 5:0 rwm",
                "allow c 5:2 rwm",
                "allow c 136:* rwm",
            ]
        );
    }

    #[test]
    fn empty_permissions_mean_rwm() {
        let config = container_devices(&[null_device("/dev/x", "")], false, None).unwrap();
        assert_eq!(
            rule_strings(&config.cgroup_rules)
                .last()
                .map(String::as_str),
            Some("allow c 1:3 rwm")
        );
    }

    #[test]
    fn bad_devices_name_the_field() {
        let err = container_devices(&[null_device("/dev/x", "rx")], false, None).unwrap_err();
        assert!(err.to_string().contains("devices[0].permissions"), "{err}");

        let missing = Device {
            container_path: "/dev/x".into(),
            host_path: "/dev/does-not-exist-crius".into(),
            permissions: "r".into(),
        };
        let err =
            container_devices(&[null_device("/dev/a", "r"), missing], false, None).unwrap_err();
        assert!(err.to_string().contains("devices[1].host_path"), "{err}");

        let file = tempfile::NamedTempFile::new().unwrap();
        let regular = Device {
            container_path: "/dev/x".into(),
            host_path: file.path().display().to_string(),
            permissions: "r".into(),
        };
        let err = container_devices(&[regular], false, None).unwrap_err();
        assert!(err.to_string().contains("devices[0].host_path"), "{err}");
    }

    #[test]
    fn privileged_allows_everything_and_copies_host_nodes() {
        let config = container_devices(&[], true, Some(Path::new("/dev"))).unwrap();
        assert_eq!(rule_strings(&config.cgroup_rules), ["allow a *:* rwm"]);
        let null = config
            .nodes
            .iter()
            .find(|n| n.path() == Path::new("/dev/null"))
            .expect("host /dev/null is copied");
        assert_eq!((null.major(), null.minor()), (1, 3));
        assert!(config
            .nodes
            .iter()
            .all(|n| !n.path().starts_with("/dev/pts") && n.path() != Path::new("/dev/console")));
    }

    #[test]
    fn privileged_without_device_dir_keeps_only_requested_nodes() {
        let config = container_devices(&[null_device("/dev/x", "r")], true, None).unwrap();
        assert_eq!(config.nodes.len(), 1);
        assert_eq!(rule_strings(&config.cgroup_rules), ["allow a *:* rwm"]);
    }
}

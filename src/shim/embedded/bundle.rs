//! What the embedded runtime changes in a bundle's `config.json` before libcontainer
//! reads it: two places where libcontainer 0.7 would not do what runc does with the
//! same spec.
//!
//! - `linux.rootfsPropagation`: runc's recursive spellings (`rshared`, `rslave`,
//!   `rprivate`, `runbindable`, which containerd and crius write for bidirectional and
//!   host-to-container volumes) become the OCI spec's own (`shared`, …). libcontainer
//!   knows only those and always applies them recursively, so both mean the same to it,
//!   while it refuses the others ("failed to prepare rootfs").
//! - The `cgroup` mount on a cgroup v1 host: libcontainer strips from the container's
//!   cgroup paths those of `/proc/<pid>` (for when it runs inside a container), with
//!   `<pid>` its own pid *inside the container's PID namespace* looked up in the host's
//!   /proc. In a pod whose containers share a PID namespace that pid soon names no host
//!   process and the container fails to start (`Procfs NotFound(/proc/9)`), or it names
//!   an unrelated one. The mount becomes what runc makes of it: a tmpfs with, for each
//!   controller hierarchy, a bind mount of the container's own cgroup directory
//!   (read-only unless the `cgroup` mount was writable). Comounted controllers
//!   (`cpu,cpuacct`) are also bound under each controller's name, where the host has
//!   symlinks. libcontainer creates those directories before it mounts anything, in
//!   every hierarchy of a controller it manages; hierarchies of others (`name=systemd`,
//!   `rdma`) are left out, as they have no directory of the container's.
//!   cgroup v2 hosts keep the `cgroup` mount: libcontainer mounts cgroup2 correctly.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::EmbeddedError;

/// The v1 controllers libcontainer 0.7 creates a container's cgroup in.
const MANAGED_CONTROLLERS: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// Options of the tmpfs that holds the hierarchies, as runc and libcontainer mount it.
const TMPFS_OPTIONS: [&str; 4] = ["nosuid", "noexec", "nodev", "mode=755"];

/// Rewrites the bundle's `config.json` where needed (see the module header). `host_v1`
/// tells whether the host's cgroups are v1; `mount_table` reads its mount table
/// (`/proc/self/mountinfo` form), only when needed.
pub(super) fn adapt(
    config: &Path,
    host_v1: bool,
    mount_table: impl FnOnce() -> std::io::Result<String>,
) -> Result<(), EmbeddedError> {
    let spec_error = |reason: String| EmbeddedError::Spec {
        what: "runtime spec",
        path: config.to_path_buf(),
        reason,
    };
    let io_error = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| EmbeddedError::Io { what, path, source }
    };
    let json = std::fs::read(config).map_err(io_error("read", config))?;
    let mut spec: Value =
        serde_json::from_slice(&json).map_err(|err| spec_error(err.to_string()))?;
    let mut changed = normalize_rootfs_propagation(&mut spec);
    if host_v1 && spec_cgroup_mount(&spec).is_some() {
        let table = mount_table().map_err(io_error("read", Path::new(MOUNT_TABLE)))?;
        changed |= emulate_cgroup_v1_mount(&mut spec, &v1_hierarchies(&table));
    }
    if !changed {
        return Ok(());
    }
    let json = serde_json::to_vec(&spec).map_err(|err| spec_error(err.to_string()))?;
    // Replaced whole: the shim reads the same file.
    let staged = config.with_extension("json.tmp");
    std::fs::write(&staged, json).map_err(io_error("write", &staged))?;
    std::fs::rename(&staged, config).map_err(io_error("replace", config))
}

/// Where the embedded runtime reads the host's mounts from.
pub(super) const MOUNT_TABLE: &str = "/proc/self/mountinfo";

/// Whether `spec`'s rootfs propagation was rewritten.
fn normalize_rootfs_propagation(spec: &mut Value) -> bool {
    let Some(propagation) = spec
        .pointer_mut("/linux/rootfsPropagation")
        .filter(|value| {
            matches!(
                value.as_str(),
                Some("rshared" | "rslave" | "rprivate" | "runbindable")
            )
        })
    else {
        return false;
    };
    let normal = propagation.as_str().unwrap_or_default()[1..].to_string();
    *propagation = normal.into();
    true
}

/// The index of `spec`'s `cgroup` mount.
fn spec_cgroup_mount(spec: &Value) -> Option<usize> {
    spec.get("mounts")?
        .as_array()?
        .iter()
        .position(|mount| mount.get("type").and_then(Value::as_str) == Some("cgroup"))
}

/// A cgroup v1 hierarchy of the host.
#[derive(Debug, PartialEq, Eq)]
struct Hierarchy {
    /// e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    mount_point: PathBuf,
    /// e.g. `["cpu", "cpuacct"]`.
    controllers: Vec<String>,
}

/// The v1 hierarchies under /sys/fs/cgroup of controllers that libcontainer manages,
/// from a mount table in `/proc/<pid>/mountinfo` form.
fn v1_hierarchies(mount_table: &str) -> Vec<Hierarchy> {
    let cgroup_root = Path::new(crate::cgroups::CGROUP_ROOT);
    mount_table
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional...] - type source super
            let (mount, filesystem) = line.split_once(" - ")?;
            let mut filesystem = filesystem.split(' ');
            if filesystem.next()? != "cgroup" {
                return None;
            }
            let super_options = filesystem.nth(1)?;
            let mount_point = PathBuf::from(mount.split(' ').nth(4)?);
            if mount_point.parent()? != cgroup_root {
                return None;
            }
            let options: Vec<&str> = super_options.split(',').collect();
            if options.iter().any(|option| option.starts_with("name=")) {
                return None;
            }
            let controllers: Vec<String> = options
                .into_iter()
                .filter(|option| MANAGED_CONTROLLERS.contains(option))
                .map(str::to_string)
                .collect();
            (!controllers.is_empty()).then_some(Hierarchy {
                mount_point,
                controllers,
            })
        })
        .collect()
}

/// Replaces `spec`'s `cgroup` mount with a tmpfs and bind mounts of the container's
/// cgroup in `hierarchies` (see the module header); whether it did. A spec without a
/// `cgroupsPath` is left to libcontainer's defaults.
fn emulate_cgroup_v1_mount(spec: &mut Value, hierarchies: &[Hierarchy]) -> bool {
    let Some(index) = spec_cgroup_mount(spec) else {
        return false;
    };
    let Some(cgroups_path) = spec
        .pointer("/linux/cgroupsPath")
        .and_then(Value::as_str)
        .map(|path| path.trim_start_matches('/').to_string())
    else {
        return false;
    };
    let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) else {
        return false;
    };
    let cgroup = mounts[index].clone();
    let destination = PathBuf::from(
        cgroup
            .get("destination")
            .and_then(Value::as_str)
            .unwrap_or(crate::cgroups::CGROUP_ROOT),
    );
    let read_only = cgroup
        .get("options")
        .and_then(Value::as_array)
        .is_some_and(|options| options.iter().any(|option| option == "ro"));
    let access = if read_only { "ro" } else { "rw" };
    let mut replacement = vec![json!({
        "destination": destination,
        "type": "tmpfs",
        "source": "tmpfs",
        "options": TMPFS_OPTIONS,
    })];
    for hierarchy in hierarchies {
        let Some(name) = hierarchy.mount_point.file_name() else {
            continue;
        };
        let mut names = vec![name.to_string_lossy().into_owned()];
        if hierarchy.controllers.len() > 1 {
            names.extend(hierarchy.controllers.iter().cloned());
        }
        let source = hierarchy.mount_point.join(&cgroups_path);
        replacement.extend(names.into_iter().map(|name| {
            json!({
                "destination": destination.join(name),
                "type": "bind",
                "source": source,
                "options": ["rbind", "nosuid", "noexec", "nodev", access],
            })
        }));
    }
    mounts.splice(index..=index, replacement);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This host's layout: one hierarchy per controller, systemd's named one, hugetlb on
    /// the unified hierarchy.
    const SEPARATE: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A systemd host's layout: comounted controllers, one not managed (rdma), and a
    /// cgroup mount elsewhere.
    const COMOUNTED: &str = "\
25 24 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
27 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:8 - cgroup cgroup rw,cpu,cpuacct
28 25 0:26 / /sys/fs/cgroup/rdma rw,nosuid shared:9 - cgroup cgroup rw,rdma
29 25 0:27 / /sys/fs/cgroup/cpuset rw,nosuid shared:10 - cgroup cgroup rw,cpuset,clone_children
90 60 0:27 / /mnt/elsewhere rw - cgroup cgroup rw,pids
";

    fn spec(cgroup_options: &[&str]) -> Value {
        json!({
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                 "options": cgroup_options},
                {"destination": "/dev/shm", "type": "bind", "source": "/shm", "options": ["rbind"]},
            ],
            "linux": {"cgroupsPath": "/kubepods/pod1/crius-c1"},
        })
    }

    fn destinations(spec: &Value) -> Vec<&str> {
        spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|mount| mount["destination"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn hierarchies_are_those_of_managed_controllers_under_the_cgroup_root() {
        assert_eq!(
            v1_hierarchies(SEPARATE),
            [
                Hierarchy {
                    mount_point: "/sys/fs/cgroup/cpu".into(),
                    controllers: vec!["cpu".into()],
                },
                Hierarchy {
                    mount_point: "/sys/fs/cgroup/memory".into(),
                    controllers: vec!["memory".into()],
                },
            ]
        );
        assert_eq!(
            v1_hierarchies(COMOUNTED),
            [
                Hierarchy {
                    mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
                    controllers: vec!["cpu".into(), "cpuacct".into()],
                },
                Hierarchy {
                    mount_point: "/sys/fs/cgroup/cpuset".into(),
                    controllers: vec!["cpuset".into()],
                },
            ]
        );
    }

    #[test]
    fn the_cgroup_mount_becomes_binds_of_the_containers_own_cgroups_in_place() {
        let mut spec = spec(&["nosuid", "noexec", "nodev", "relatime", "ro"]);
        assert!(emulate_cgroup_v1_mount(
            &mut spec,
            &v1_hierarchies(COMOUNTED)
        ));
        assert_eq!(
            destinations(&spec),
            [
                "/proc",
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/cpuacct",
                "/sys/fs/cgroup/cpuset",
                "/dev/shm",
            ]
        );
        assert_eq!(spec["mounts"][1]["type"], "tmpfs");
        let cpu = &spec["mounts"][3];
        assert_eq!(cpu["type"], "bind");
        assert_eq!(
            cpu["source"],
            "/sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/crius-c1"
        );
        assert_eq!(
            cpu["options"],
            json!(["rbind", "nosuid", "noexec", "nodev", "ro"])
        );
    }

    #[test]
    fn a_writable_cgroup_mount_gives_writable_binds() {
        let mut spec = spec(&["nosuid", "noexec", "nodev", "relatime", "rw"]);
        assert!(emulate_cgroup_v1_mount(
            &mut spec,
            &v1_hierarchies(SEPARATE)
        ));
        assert_eq!(
            destinations(&spec)[1..4],
            [
                "/sys/fs/cgroup",
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/memory"
            ]
        );
        assert_eq!(spec["mounts"][3]["options"][4], "rw");
    }

    #[test]
    fn specs_without_a_cgroup_mount_or_path_are_left_alone() {
        let hierarchies = v1_hierarchies(SEPARATE);
        let mut without_path = spec(&["ro"]);
        without_path["linux"] = json!({});
        let before = without_path.clone();
        assert!(!emulate_cgroup_v1_mount(&mut without_path, &hierarchies));
        assert_eq!(without_path, before);
        let mut without_mount = json!({"mounts": [], "linux": {"cgroupsPath": "/c"}});
        assert!(!emulate_cgroup_v1_mount(&mut without_mount, &hierarchies));
    }

    #[test]
    fn recursive_propagation_spellings_become_the_oci_ones() {
        for (given, wanted) in [
            ("rshared", "shared"),
            ("rslave", "slave"),
            ("rprivate", "private"),
        ] {
            let mut spec = json!({"linux": {"rootfsPropagation": given}});
            assert!(normalize_rootfs_propagation(&mut spec));
            assert_eq!(spec["linux"]["rootfsPropagation"], wanted);
        }
        let mut spec = json!({"linux": {"rootfsPropagation": "slave"}});
        assert!(!normalize_rootfs_propagation(&mut spec));
        assert!(!normalize_rootfs_propagation(&mut json!({})));
    }

    #[test]
    fn adapt_rewrites_the_file_only_when_something_changes() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        let original = serde_json::to_vec(&spec(&["ro"])).unwrap();
        std::fs::write(&config, &original).unwrap();
        // cgroup v2: nothing to do, and the mount table is never read.
        adapt(&config, false, || panic!("read the mount table")).unwrap();
        assert_eq!(std::fs::read(&config).unwrap(), original);
        adapt(&config, true, || Ok(SEPARATE.to_string())).unwrap();
        let adapted: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
        assert_eq!(adapted["mounts"].as_array().unwrap().len(), 5);
        assert!(!dir.path().join("config.json.tmp").exists());
        let failed = adapt(&config, true, || Err(std::io::Error::other("no /proc")));
        // Already adapted: no cgroup mount left, so no table needed.
        assert!(failed.is_ok());
    }
}

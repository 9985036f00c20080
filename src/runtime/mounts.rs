//! The container's mounts: the default filesystems every Linux container gets, the
//! sandbox's shared files, then the CRI mounts.
//!
//! Rules (runc's `spec` defaults and containerd's CRI `WithMounts`):
//! - Defaults: `/proc`, `/dev` (tmpfs), `/dev/pts`, `/dev/mqueue`, `/sys` and
//!   `/sys/fs/cgroup` (read-only unless privileged), then `/dev/shm` (the sandbox's, so
//!   the pod shares one; a private 64 MiB tmpfs without one), `/etc/hosts`,
//!   `/etc/resolv.conf`, `/etc/hostname` from the sandbox (read-only when the rootfs is).
//! - A CRI mount replaces any default at the same destination, and a CRI mount of `/dev`
//!   replaces every default under `/dev` too (it would hide them anyway, and runc would
//!   mount them into the wrong tmpfs).
//! - CRI mounts are bind mounts (`rbind`, `ro`/`rw`, propagation PRIVATE → `rprivate`,
//!   HOST_TO_CONTAINER → `rslave`, BIDIRECTIONAL → `rshared`), ordered parents before
//!   children (stable by depth) so a mount at `/a/b` is not hidden by one at `/a`.
//! - The host path must exist; symlinks in it are resolved here (CRI `Mount`: "a missing
//!   path is an error").
//! - `rslave`/`rshared` mounts need the rootfs to propagate too, so [`rootfs_propagation`]
//!   asks for the weakest propagation that carries them.
//! - A bind mount propagates only what the host's mount of its source propagates: an
//!   `rshared` source must be on a shared mount, an `rslave` one on a shared or slave
//!   mount, else the container would silently see nothing come or go.
//!   [`check_host_propagation`] refuses such a request, as containerd does (kubelet makes
//!   its volume directories shared).

use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Mount as OciMount, MountBuilder};

use super::input::{Mount, MountPropagation, SandboxFiles};
use super::SpecError;

/// How the mounts are to be built; the parts of the input that shape them.
pub(super) struct MountPlan<'a> {
    pub cri_mounts: &'a [Mount],
    pub sandbox_files: &'a SandboxFiles,
    pub privileged: bool,
    pub readonly_rootfs: bool,
}

/// The ordered `mounts` of the spec.
pub(super) fn container_mounts(plan: &MountPlan<'_>) -> Result<Vec<OciMount>, SpecError> {
    let cri = cri_mounts(plan.cri_mounts)?;
    let replaced_by_cri = |default: &OciMount| {
        cri.iter().any(|m| {
            m.destination() == default.destination()
                || (m.destination() == Path::new("/dev")
                    && default.destination().starts_with("/dev"))
        })
    };
    let mut mounts: Vec<OciMount> = default_mounts(plan)?
        .into_iter()
        .filter(|m| !replaced_by_cri(m))
        .collect();
    mounts.extend(cri);
    Ok(mounts)
}

/// `linux.rootfsPropagation`: `rshared` if any CRI mount is bidirectional, `rslave` if
/// any receives host mounts, else unset (runc's default, `rprivate`).
pub(super) fn rootfs_propagation(cri_mounts: &[Mount]) -> Option<&'static str> {
    let has = |p: MountPropagation| cri_mounts.iter().any(|m| m.propagation == p);
    if has(MountPropagation::Bidirectional) {
        Some("rshared")
    } else if has(MountPropagation::HostToContainer) {
        Some("rslave")
    } else {
        None
    }
}

/// Where the kernel lists the mounts this process sees, for [`check_host_propagation`].
pub const HOST_MOUNT_TABLE: &str = "/proc/self/mountinfo";

/// Checks that the host mount of each `HostToContainer` or `Bidirectional` mount's source
/// propagates what the mount promises (see the module header). `read_mount_table` returns
/// the host's mount table in `/proc/<pid>/mountinfo` form ([`HOST_MOUNT_TABLE`]); it is
/// called only when such a mount is requested.
pub fn check_host_propagation(
    cri_mounts: &[Mount],
    read_mount_table: impl FnOnce() -> io::Result<String>,
) -> Result<(), SpecError> {
    if cri_mounts
        .iter()
        .all(|m| m.propagation == MountPropagation::Private)
    {
        return Ok(());
    }
    let table = read_mount_table().map_err(|source| SpecError::MountTable { source })?;
    for (index, requested) in cri_mounts.iter().enumerate() {
        let (wanted, accepted): (&str, &[&str]) = match requested.propagation {
            MountPropagation::Private => continue,
            MountPropagation::HostToContainer => ("a shared or slave", &["shared:", "master:"]),
            MountPropagation::Bidirectional => ("a shared", &["shared:"]),
        };
        let path = std::fs::canonicalize(&requested.host_path).map_err(|source| {
            SpecError::MountHostPath {
                index,
                path: PathBuf::from(&requested.host_path),
                source,
            }
        })?;
        let (mount_point, tags) = host_mount_of(&table, &path).unwrap_or_default();
        if !tags
            .iter()
            .any(|tag| accepted.iter().any(|prefix| tag.starts_with(prefix)))
        {
            return Err(SpecError::MountNotPropagating {
                index,
                path,
                mount_point,
                wanted,
            });
        }
    }
    Ok(())
}

/// The mount of `table` that holds `path`: its mount point and optional fields (the
/// propagation tags `shared:N`, `master:N`…). The deepest mount point wins and, among
/// mounts stacked on one point, the last listed, which is the one on top.
fn host_mount_of<'t>(table: &'t str, path: &Path) -> Option<(PathBuf, Vec<&'t str>)> {
    let mut found: Option<(PathBuf, Vec<&str>)> = None;
    for line in table.lines() {
        // id parent major:minor root mount-point options [optional...] - type source super
        let mut fields = line.split(' ');
        let Some(mount_point) = fields.nth(4).map(unescape_mount_point) else {
            continue;
        };
        if !path.starts_with(&mount_point) {
            continue;
        }
        let deeper = found
            .as_ref()
            .is_none_or(|(best, _)| mount_point.components().count() >= best.components().count());
        if deeper {
            let tags = fields.skip(1).take_while(|field| *field != "-").collect();
            found = Some((mount_point, tags));
        }
    }
    found
}

/// A mountinfo path: the kernel writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_point(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut path = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)))
            .and_then(|digits| u8::from_str_radix(std::str::from_utf8(digits).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                path.push(byte);
                i += 4;
            }
            None => {
                path.push(bytes[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(path))
}

fn default_mounts(plan: &MountPlan<'_>) -> Result<Vec<OciMount>, SpecError> {
    // /sys and the cgroup tree are the host's view; only privileged containers may
    // write them (CRI "writable /sys" for privileged).
    let sys_mode = if plan.privileged { "rw" } else { "ro" };
    let sandbox_file_mode = if plan.readonly_rootfs { "ro" } else { "rw" };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        )?,
    ];
    mounts.push(match &plan.sandbox_files.shm {
        Some(shm) => bind(
            "/dev/shm",
            shm,
            &["rbind", "rprivate", "nosuid", "nodev", "noexec", "rw"],
        )?,
        None => mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    });
    let sandbox_files = [
        ("/etc/hosts", &plan.sandbox_files.hosts),
        ("/etc/resolv.conf", &plan.sandbox_files.resolv_conf),
        ("/etc/hostname", &plan.sandbox_files.hostname),
    ];
    for (destination, source) in sandbox_files {
        if let Some(source) = source {
            mounts.push(bind(
                destination,
                source,
                &["rbind", "rprivate", sandbox_file_mode],
            )?);
        }
    }
    Ok(mounts)
}

/// The CRI mounts as bind mounts, parents before children.
fn cri_mounts(requested: &[Mount]) -> Result<Vec<OciMount>, SpecError> {
    let mut mounts = requested
        .iter()
        .enumerate()
        .map(|(index, m)| cri_mount(index, m))
        .collect::<Result<Vec<_>, _>>()?;
    // Stable, so mounts at the same depth keep the request's order.
    mounts.sort_by_key(|m| m.destination().components().count());
    Ok(mounts)
}

fn cri_mount(index: usize, requested: &Mount) -> Result<OciMount, SpecError> {
    let destination = Path::new(&requested.container_path);
    if !destination.is_absolute() {
        return Err(SpecError::InvalidMount {
            index,
            field: "container_path",
            reason: format!("{:?} is not an absolute path", requested.container_path),
        });
    }
    if requested.recursive_read_only
        && (!requested.readonly || requested.propagation != MountPropagation::Private)
    {
        return Err(SpecError::InvalidMount {
            index,
            field: "recursive_read_only",
            reason: "requires readonly and PROPAGATION_PRIVATE".into(),
        });
    }
    let source =
        std::fs::canonicalize(&requested.host_path).map_err(|source| SpecError::MountHostPath {
            index,
            path: PathBuf::from(&requested.host_path),
            source,
        })?;
    let propagation = match requested.propagation {
        MountPropagation::Private => "rprivate",
        MountPropagation::HostToContainer => "rslave",
        MountPropagation::Bidirectional => "rshared",
    };
    let mut options = vec![
        "rbind",
        propagation,
        if requested.readonly { "ro" } else { "rw" },
    ];
    if requested.recursive_read_only {
        options.push("rro");
    }
    // Normalised (no trailing or doubled slashes) so replacement and ordering compare
    // like with like.
    let destination: PathBuf = destination.components().collect();
    bind(destination, &source, &options)
}

fn bind(
    destination: impl Into<PathBuf>,
    source: &Path,
    options: &[&str],
) -> Result<OciMount, SpecError> {
    build(
        MountBuilder::default()
            .destination(destination)
            .typ("bind")
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>()),
    )
}

fn mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<OciMount, SpecError> {
    build(
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>()),
    )
}

fn build(builder: MountBuilder) -> Result<OciMount, SpecError> {
    builder.build().map_err(|source| SpecError::Assemble {
        part: "mounts",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan<'a>(cri_mounts: &'a [Mount], files: &'a SandboxFiles) -> MountPlan<'a> {
        MountPlan {
            cri_mounts,
            sandbox_files: files,
            privileged: false,
            readonly_rootfs: false,
        }
    }

    fn find<'m>(mounts: &'m [OciMount], destination: &str) -> Vec<&'m OciMount> {
        mounts
            .iter()
            .filter(|m| m.destination() == Path::new(destination))
            .collect()
    }

    fn options(m: &OciMount) -> Vec<String> {
        m.options().clone().unwrap_or_default()
    }

    fn destinations(mounts: &[OciMount]) -> Vec<String> {
        mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect()
    }

    #[test]
    fn defaults_without_sandbox_files() {
        let files = SandboxFiles::default();
        let mounts = container_mounts(&plan(&[], &files)).unwrap();
        assert_eq!(
            destinations(&mounts),
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/shm"
            ]
        );
        let dev = find(&mounts, "/dev")[0];
        assert_eq!(dev.typ().as_deref(), Some("tmpfs"));
        assert!(options(dev).contains(&"size=65536k".to_string()));
        let pts = find(&mounts, "/dev/pts")[0];
        for o in ["newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] {
            assert!(options(pts).contains(&o.to_string()), "{o}");
        }
        assert!(options(find(&mounts, "/sys")[0]).contains(&"ro".to_string()));
        assert!(options(find(&mounts, "/sys/fs/cgroup")[0]).contains(&"ro".to_string()));
        let shm = find(&mounts, "/dev/shm")[0];
        assert_eq!(shm.typ().as_deref(), Some("tmpfs"));
    }

    #[test]
    fn privileged_gets_writable_sys_and_cgroup() {
        let files = SandboxFiles::default();
        let mut plan = plan(&[], &files);
        plan.privileged = true;
        let mounts = container_mounts(&plan).unwrap();
        for destination in ["/sys", "/sys/fs/cgroup"] {
            let opts = options(find(&mounts, destination)[0]);
            assert!(opts.contains(&"rw".to_string()), "{destination}");
            assert!(!opts.contains(&"ro".to_string()), "{destination}");
        }
    }

    #[test]
    fn sandbox_files_are_bound_and_follow_readonly_rootfs() {
        let files = SandboxFiles {
            hosts: Some("/sb/hosts".into()),
            resolv_conf: Some("/sb/resolv.conf".into()),
            hostname: None,
            shm: Some("/sb/shm".into()),
        };
        let mounts = container_mounts(&plan(&[], &files)).unwrap();
        let shm = find(&mounts, "/dev/shm")[0];
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(shm.source().as_deref(), Some(Path::new("/sb/shm")));
        let hosts = find(&mounts, "/etc/hosts")[0];
        assert_eq!(hosts.source().as_deref(), Some(Path::new("/sb/hosts")));
        assert!(options(hosts).contains(&"rw".to_string()));
        assert_eq!(find(&mounts, "/etc/resolv.conf").len(), 1);
        assert!(find(&mounts, "/etc/hostname").is_empty());

        let mut readonly = plan(&[], &files);
        readonly.readonly_rootfs = true;
        let mounts = container_mounts(&readonly).unwrap();
        assert!(options(find(&mounts, "/etc/hosts")[0]).contains(&"ro".to_string()));
    }

    #[test]
    fn cri_mounts_replace_defaults_and_map_propagation() {
        let host = tempfile::tempdir().unwrap();
        let hosts_file = host.path().join("hosts");
        std::fs::write(&hosts_file, "").unwrap();
        let data = host.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let requested = vec![
            Mount {
                container_path: "/etc/hosts".into(),
                host_path: hosts_file.display().to_string(),
                readonly: true,
                ..Default::default()
            },
            Mount {
                container_path: "/data/".into(),
                host_path: data.display().to_string(),
                propagation: MountPropagation::HostToContainer,
                ..Default::default()
            },
            Mount {
                container_path: "/shared".into(),
                host_path: data.display().to_string(),
                propagation: MountPropagation::Bidirectional,
                ..Default::default()
            },
        ];
        let files = SandboxFiles {
            hosts: Some("/sb/hosts".into()),
            ..Default::default()
        };
        let mounts = container_mounts(&plan(&requested, &files)).unwrap();
        let hosts = find(&mounts, "/etc/hosts");
        assert_eq!(hosts.len(), 1, "the CRI mount replaces the sandbox's");
        assert_eq!(hosts[0].source().as_deref(), Some(hosts_file.as_path()));
        assert_eq!(options(hosts[0]), ["rbind", "rprivate", "ro"]);
        assert_eq!(
            options(find(&mounts, "/data")[0]),
            ["rbind", "rslave", "rw"]
        );
        assert_eq!(
            options(find(&mounts, "/shared")[0]),
            ["rbind", "rshared", "rw"]
        );
        assert_eq!(rootfs_propagation(&requested), Some("rshared"));
        assert_eq!(rootfs_propagation(&requested[..2]), Some("rslave"));
        assert_eq!(rootfs_propagation(&requested[..1]), None);
    }

    #[test]
    fn cri_dev_mount_replaces_every_default_under_dev() {
        let host = tempfile::tempdir().unwrap();
        let requested = vec![Mount {
            container_path: "/dev".into(),
            host_path: host.path().display().to_string(),
            ..Default::default()
        }];
        let files = SandboxFiles::default();
        let mounts = container_mounts(&plan(&requested, &files)).unwrap();
        let under_dev: Vec<_> = mounts
            .iter()
            .filter(|m| m.destination().starts_with("/dev"))
            .collect();
        assert_eq!(under_dev.len(), 1);
        assert_eq!(under_dev[0].typ().as_deref(), Some("bind"));
    }

    #[test]
    fn cri_mounts_are_ordered_parents_first() {
        let host = tempfile::tempdir().unwrap();
        let path = host.path().display().to_string();
        let at = |container_path: &str| Mount {
            container_path: container_path.into(),
            host_path: path.clone(),
            ..Default::default()
        };
        let requested = vec![at("/a/b/c"), at("/a"), at("/z"), at("/a/b")];
        let files = SandboxFiles::default();
        let mounts = container_mounts(&plan(&requested, &files)).unwrap();
        let tail: Vec<_> = destinations(&mounts).into_iter().skip(7).collect();
        assert_eq!(tail, ["/a", "/z", "/a/b", "/a/b/c"]);
    }

    #[test]
    fn missing_host_path_names_the_field() {
        let host = tempfile::tempdir().unwrap();
        let requested = vec![
            Mount {
                container_path: "/ok".into(),
                host_path: host.path().display().to_string(),
                ..Default::default()
            },
            Mount {
                container_path: "/missing".into(),
                host_path: host.path().join("nope").display().to_string(),
                ..Default::default()
            },
        ];
        let files = SandboxFiles::default();
        let err = container_mounts(&plan(&requested, &files)).unwrap_err();
        assert!(matches!(err, SpecError::MountHostPath { index: 1, .. }));
        assert!(err.to_string().contains("mounts[1].host_path"), "{err}");
    }

    #[test]
    fn the_host_mount_of_a_path_is_the_deepest_and_topmost() {
        let table = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 27 0:40 / /vol rw,relatime shared:7 - tmpfs tmpfs rw
41 40 0:41 / /vol/in rw master:7 propagate_from:2 - tmpfs tmpfs rw
42 27 0:42 / /with\\040space rw shared:9 - tmpfs tmpfs rw
43 40 0:43 / /vol rw,relatime - tmpfs tmpfs rw
";
        let of = |path: &str| host_mount_of(table, Path::new(path)).unwrap();
        assert_eq!(of("/etc/x"), (PathBuf::from("/"), vec!["shared:1"]));
        assert_eq!(
            of("/vol/in/x"),
            (
                PathBuf::from("/vol/in"),
                vec!["master:7", "propagate_from:2"]
            )
        );
        // /vol/inner is not under /vol/in; the private mount stacked last on /vol is on top.
        assert_eq!(of("/vol/inner"), (PathBuf::from("/vol"), vec![]));
        assert_eq!(
            of("/with space/a"),
            (PathBuf::from("/with space"), vec!["shared:9"])
        );
    }

    #[test]
    fn propagating_mounts_need_a_host_mount_that_propagates() {
        let host = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(host.path()).unwrap();
        for dir in ["shared", "slave", "private"] {
            std::fs::create_dir(root.join(dir)).unwrap();
        }
        let table = format!(
            "1 0 8:1 / / rw - ext4 /dev/sda rw\n\
             2 1 0:40 / {0}/shared rw shared:7 - tmpfs tmpfs rw\n\
             3 1 0:41 / {0}/slave rw master:7 - tmpfs tmpfs rw\n",
            root.display()
        );
        let mount = |dir: &str, propagation| Mount {
            container_path: format!("/{dir}"),
            host_path: root.join(dir).display().to_string(),
            propagation,
            ..Default::default()
        };
        let check = |mounts: &[Mount]| check_host_propagation(mounts, || Ok(table.clone()));
        use MountPropagation::*;
        check(&[
            mount("shared", Bidirectional),
            mount("shared", HostToContainer),
            mount("slave", HostToContainer),
            mount("private", Private),
        ])
        .unwrap();

        let err = check(&[mount("shared", Private), mount("slave", Bidirectional)]).unwrap_err();
        assert!(
            matches!(err, SpecError::MountNotPropagating { index: 1, .. }),
            "{err}"
        );
        let message = err.to_string();
        assert!(message.contains("mounts[1].propagation"), "{message}");
        assert!(message.contains("not a shared mount"), "{message}");
        let err = check(&[mount("private", HostToContainer)]).unwrap_err();
        assert!(
            err.to_string()
                .contains("is mounted on /, which is not a shared or slave mount"),
            "{err}"
        );

        // Without a propagating mount, the table is not even read.
        check_host_propagation(&[mount("private", Private)], || -> io::Result<String> {
            panic!("read the mount table")
        })
        .unwrap();
    }

    #[test]
    fn host_path_symlinks_are_resolved() {
        let host = tempfile::tempdir().unwrap();
        let real = host.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, host.path().join("link")).unwrap();
        let requested = vec![Mount {
            container_path: "/v".into(),
            host_path: host.path().join("link").display().to_string(),
            ..Default::default()
        }];
        let files = SandboxFiles::default();
        let mounts = container_mounts(&plan(&requested, &files)).unwrap();
        let real = std::fs::canonicalize(real).unwrap();
        assert_eq!(
            find(&mounts, "/v")[0].source().as_deref(),
            Some(real.as_path())
        );
    }

    #[test]
    fn invalid_mounts_name_the_field() {
        let host = tempfile::tempdir().unwrap();
        let relative = vec![Mount {
            container_path: "relative".into(),
            host_path: host.path().display().to_string(),
            ..Default::default()
        }];
        let files = SandboxFiles::default();
        let err = container_mounts(&plan(&relative, &files)).unwrap_err();
        assert!(
            err.to_string().contains("mounts[0].container_path"),
            "{err}"
        );

        let rro_rw = vec![Mount {
            container_path: "/x".into(),
            host_path: host.path().display().to_string(),
            recursive_read_only: true,
            ..Default::default()
        }];
        let err = container_mounts(&plan(&rro_rw, &files)).unwrap_err();
        assert!(err.to_string().contains("recursive_read_only"), "{err}");

        let rro = vec![Mount {
            container_path: "/x".into(),
            host_path: host.path().display().to_string(),
            recursive_read_only: true,
            readonly: true,
            ..Default::default()
        }];
        let mounts = container_mounts(&plan(&rro, &files)).unwrap();
        assert_eq!(
            options(find(&mounts, "/x")[0]),
            ["rbind", "rprivate", "ro", "rro"]
        );
    }
}

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

//! CRI mount propagation in real mount namespaces, as critest's "Container Mount
//! Propagation" specs check it: a host directory bind-mounted on itself (made shared, or
//! private), a privileged container with it as a volume, then a mount on the host side
//! that only HOST_TO_CONTAINER and BIDIRECTIONAL volumes receive, and a mount in the
//! container that only BIDIRECTIONAL ones send back. A propagating volume whose host
//! mount cannot propagate is refused. Each test touches only the mounts it made under its
//! own directory and removes them.

mod common;

use std::path::PathBuf;

use common::pods::*;
use common::registry::Registry;
use crius::cri::api::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tonic::Code;

/// The host side of one test: `<dir>/mnt` bind-mounted on itself with the chosen
/// propagation, `<dir>/src` holding a flag file to mount on the host. Unmounts what the
/// test mounted under `<dir>` on drop, deepest first.
struct HostVolume {
    dir: tempfile::TempDir,
}

impl HostVolume {
    fn new(propagation: MsFlags) -> HostVolume {
        let dir = tempfile::Builder::new()
            .prefix("crius-propagation-")
            .tempdir()
            .unwrap();
        let volume = HostVolume { dir };
        std::fs::create_dir_all(volume.mount_source().join("from-host")).unwrap();
        std::fs::create_dir_all(volume.path("src")).unwrap();
        std::fs::write(volume.path("src/flag"), "").unwrap();
        let source = volume.mount_source();
        mount(
            Some(&source),
            &source,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        mount(
            None::<&str>,
            &source,
            None::<&str>,
            propagation | MsFlags::MS_REC,
            None::<&str>,
        )
        .unwrap();
        volume
    }

    fn path(&self, name: &str) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap().join(name)
    }

    /// The volume: the same path on the host and in the container, as critest has it.
    fn mount_source(&self) -> PathBuf {
        self.path("mnt")
    }

    /// Mounts `src` at `mnt/from-host` on the host.
    fn mount_from_host(&self) {
        mount(
            Some(&self.path("src")),
            &self.mount_source().join("from-host"),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
    }

    /// The mount points under this volume's directory in this (the host's) namespace.
    fn mount_points(&self) -> Vec<PathBuf> {
        let dir = self.path("");
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        table
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(PathBuf::from)
            .filter(|point| point.starts_with(&dir))
            .collect()
    }
}

impl Drop for HostVolume {
    fn drop(&mut self) {
        let mut points = self.mount_points();
        points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
        for point in points {
            let _ = umount2(&point, MntFlags::MNT_DETACH);
        }
    }
}

/// What each side saw of the other's mount.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// The container saw the host's mount at `mnt/from-host`.
    host_mount_in_container: bool,
    /// The host saw the container's mount at `mnt/from-container`.
    container_mount_on_host: bool,
}

/// critest's sequence: a privileged container with the volume, a mount on the host, then
/// one in the container; reports what crossed over.
async fn propagate(host_propagation: MsFlags, propagation: MountPropagation) -> Seen {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let volume = HostVolume::new(host_propagation);
    let source = volume.mount_source().display().to_string();
    let config = critest_pod("propagation", logs.path());
    let pod = run_pod(&mut client, &config).await;
    let id = create(
        &mut client,
        &pod,
        &config,
        volume_container(&image, &source, propagation),
    )
    .await
    .unwrap();
    let mounts = status(&mut client, &id).await.mounts;
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].propagation, propagation as i32);
    assert_eq!(mounts[0].host_path, source);
    start(&mut client, &id).await;

    volume.mount_from_host();
    let listed = exec_ok(
        &mut client,
        &id,
        &["ls", "-A", &format!("{source}/from-host")],
    )
    .await;
    let in_container = format!("{source}/from-container");
    exec_ok(
        &mut client,
        &id,
        &[
            "sh",
            "-c",
            &format!("mkdir -p {in_container} && mount --bind /etc {in_container}"),
        ],
    )
    .await;
    let on_host = std::fs::read_dir(&in_container).unwrap().next().is_some();
    // Before the container goes: a mount it sent to the host holds its rootfs.
    drop(volume);
    remove_pod(&mut client, &pod).await;
    Seen {
        host_mount_in_container: listed.contains("flag"),
        container_mount_on_host: on_host,
    }
}

/// A pod as critest makes it: no namespace options, so the protobuf defaults (POD).
fn critest_pod(name: &str, logs: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        linux: None,
        ..pod_config(name, logs)
    }
}

/// A privileged container (it mounts) with `source` as a volume at the same path.
fn volume_container(image: &str, source: &str, propagation: MountPropagation) -> ContainerConfig {
    let mut config = privileged(container_config("volume", image, &["sleep", "1000"]));
    config.mounts = vec![Mount {
        container_path: source.to_string(),
        host_path: source.to_string(),
        propagation: propagation as i32,
        ..Mount::default()
    }];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_volumes_propagate_nothing() {
    let seen = propagate(MsFlags::MS_PRIVATE, MountPropagation::PropagationPrivate).await;
    assert_eq!(
        seen,
        Seen {
            host_mount_in_container: false,
            container_mount_on_host: false,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_to_container_volumes_receive_host_mounts_only() {
    let seen = propagate(
        MsFlags::MS_SHARED,
        MountPropagation::PropagationHostToContainer,
    )
    .await;
    assert_eq!(
        seen,
        Seen {
            host_mount_in_container: true,
            container_mount_on_host: false,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_volumes_propagate_both_ways() {
    let seen = propagate(
        MsFlags::MS_SHARED,
        MountPropagation::PropagationBidirectional,
    )
    .await;
    assert_eq!(
        seen,
        Seen {
            host_mount_in_container: true,
            container_mount_on_host: true,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_propagating_volume_on_a_private_host_mount_is_refused() {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let volume = HostVolume::new(MsFlags::MS_PRIVATE);
    let source = volume.mount_source().display().to_string();
    let config = critest_pod("refused", logs.path());
    let pod = run_pod(&mut client, &config).await;
    for propagation in [
        MountPropagation::PropagationHostToContainer,
        MountPropagation::PropagationBidirectional,
    ] {
        let err = create(
            &mut client,
            &pod,
            &config,
            volume_container(&image, &source, propagation),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(&format!("mounted on {source}")),
            "{}",
            err.message()
        );
    }
    assert!(list_containers(&mut client).await.is_empty());
    remove_pod(&mut client, &pod).await;
}

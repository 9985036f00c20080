//! Image volumes (CRI `Mount.image`): an image's files mounted read-only into a
//! container, whole or one subdirectory, reported in ContainerStatus with the image's id,
//! and unmounted when the container goes (the harness asserts no mount is left).

mod common;

use common::images;
use common::pods::*;
use common::pull_image;
use common::registry::Registry;
use crius::cri::api::*;
use tonic::Code;

fn image_mount(container_path: &str, image: &str, sub_path: &str, readonly: bool) -> Mount {
    Mount {
        container_path: container_path.to_string(),
        readonly,
        image: Some(ImageSpec {
            image: image.to_string(),
            ..ImageSpec::default()
        }),
        image_sub_path: sub_path.to_string(),
        ..Mount::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_volumes_mount_read_only_whole_or_a_sub_path_and_report_the_image() {
    let registry = Registry::start();
    registry.push(&images::multilayer(), "multilayer", "latest");
    let (_daemon, mut client, busybox) = daemon_with_busybox(&registry).await;
    let multilayer = registry.reference("multilayer", "latest");
    let multilayer_id = pull_image(&mut client, &multilayer, None).await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("volumes", logs.path());
    let pod = run_pod(&mut client, &config).await;

    let mut spec = container_config("reader", &busybox, &["sleep", "1000"]);
    spec.mounts = vec![
        // Several layers (an overlay) and a sub path of a one-layer image (a bind mount).
        image_mount("/mnt/whole", &multilayer, "", true),
        image_mount("/mnt/etc", &busybox, "etc", true),
    ];
    let id = create(&mut client, &pod, &config, spec).await.unwrap();
    start(&mut client, &id).await;

    let (code, _, stderr) = exec(&mut client, &id, &["ls", "/mnt/whole/bin/sh"]).await;
    assert_eq!(code, 0, "{stderr}");
    // The sub path is the volume's root: etc/passwd is at /mnt/etc/passwd.
    let (code, passwd, _) = exec(&mut client, &id, &["cat", "/mnt/etc/passwd"]).await;
    assert_eq!(code, 0);
    assert!(passwd.contains("root:"), "{passwd}");
    let (code, _, _) = exec(&mut client, &id, &["touch", "/mnt/whole/new-file"]).await;
    assert_ne!(code, 0, "an image volume must be read-only");
    // Binaries of the image run from the volume.
    let (code, out, stderr) =
        exec(&mut client, &id, &["/mnt/whole/bin/busybox", "echo", "ran"]).await;
    assert_eq!((code, out.trim()), (0, "ran"), "{stderr}");

    let status = status(&mut client, &id).await;
    let whole = status
        .mounts
        .iter()
        .find(|mount| mount.container_path == "/mnt/whole")
        .expect("the image volume in ContainerStatus");
    let reported = whole.image.as_ref().expect("the mount names its image");
    assert_eq!(reported.image_ref, multilayer_id);
    assert!(whole.readonly);
    remove_pod(&mut client, &pod).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_image_volumes_are_refused_naming_the_field_and_leave_nothing() {
    let registry = Registry::start();
    let (daemon, mut client, busybox) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("refused", logs.path());
    let pod = run_pod(&mut client, &config).await;
    for (mount, code, says) in [
        (
            image_mount("/mnt/rw", &busybox, "", false),
            Code::InvalidArgument,
            "readonly",
        ),
        (
            image_mount("/mnt/up", &busybox, "../..", true),
            Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            image_mount("/mnt/none", &busybox, "no-such-dir", true),
            Code::InvalidArgument,
            "image_sub_path",
        ),
        (
            image_mount("/mnt/missing", &registry.reference("absent", "1"), "", true),
            Code::NotFound,
            "absent",
        ),
    ] {
        let mut spec = container_config("refused", &busybox, &["true"]);
        spec.mounts = vec![mount];
        let err = create(&mut client, &pod, &config, spec).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(says), "{err:?}");
    }
    let left = common::entries(&daemon.state().join("containers")).unwrap_or(0);
    assert_eq!(left, 0, "a refused container left its bundle");
    remove_pod(&mut client, &pod).await;
}

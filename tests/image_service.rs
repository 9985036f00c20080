//! The CRI ImageService against a real registry: pulls of every test image, names and
//! ids as kubelet sees them, mirrors, removal, restarts and bad input.

mod common;

use common::images::{self, TestImage};
use common::registry::Registry;
use common::{image_spec, pull_image, Daemon};
use crius::cri::api::*;
use crius::cri::client::CriClient;
use tonic::Code;

/// PullImage without credentials.
async fn pull(client: &mut CriClient, image: &str) -> Result<String, tonic::Status> {
    pull_image(client, image, None).await
}

async fn status(client: &mut CriClient, image: &str) -> ImageStatusResponse {
    client
        .image
        .image_status(ImageStatusRequest {
            image: image_spec(image),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
}

fn config_digest(image: &TestImage, architecture: &str) -> String {
    image.manifest(architecture)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Number of entries in a directory under the daemon's root.
fn entries(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_image_is_listed_with_kubelets_names_and_id() {
    let registry = Registry::start();
    let busybox = images::busybox();
    registry.push(&busybox, "busybox", "latest");
    let daemon = Daemon::for_registry(registry.addr(), "");
    let mut client = daemon.client().await;

    let name = registry.reference("busybox", "latest");
    let image_ref = pull_image(&mut client, &name, None).await.unwrap();
    assert_eq!(
        image_ref,
        config_digest(&busybox, "amd64"),
        "image_ref must be the config digest"
    );

    let listed = client
        .image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1);
    let image = &listed[0];
    assert_eq!(image.id, image_ref);
    assert_eq!(image.repo_tags, vec![name.clone()]);
    assert_eq!(
        image.repo_digests,
        vec![format!("{}/busybox@{}", registry.addr(), busybox.digest)]
    );
    assert!(image.size > 1_000_000, "size {}", image.size);
    assert_eq!(image.uid, None, "busybox has no USER");

    // ImageStatus finds it by tag, id, bare id hex, id prefix and digest reference.
    let id_hex = image_ref.trim_start_matches("sha256:").to_string();
    for key in [
        name.clone(),
        image_ref.clone(),
        id_hex.clone(),
        id_hex[..12].to_string(),
        format!("{}/busybox@{}", registry.addr(), busybox.digest),
    ] {
        let found = status(&mut client, &key).await;
        assert_eq!(
            found.image.as_ref().map(|i| i.id.as_str()),
            Some(image_ref.as_str()),
            "{key}"
        );
    }
    let verbose = status(&mut client, &name).await;
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "sh");

    // Missing images are an empty answer, not an error.
    let missing = status(&mut client, &registry.reference("busybox", "nope")).await;
    assert!(missing.image.is_none());

    // The filter of ListImages narrows to one image.
    let filtered = client
        .image
        .list_images(ListImagesRequest {
            filter: Some(ImageFilter {
                image: image_spec(&name),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);

    // The layer is unpacked into a snapshot with the applets as hard links.
    let snapshots = daemon.root().join("snapshots");
    let layer_dir = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .find(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
        .expect("a snapshot")
        .path();
    use std::os::unix::fs::MetadataExt;
    let sh = std::fs::metadata(layer_dir.join("fs/bin/sh")).unwrap();
    let busybox_bin = std::fs::metadata(layer_dir.join("fs/bin/busybox")).unwrap();
    assert_eq!(sh.ino(), busybox_bin.ino(), "applets must be hard links");

    let fs_info = client
        .image
        .image_fs_info(ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let usage = &fs_info.image_filesystems[0];
    assert!(usage.used_bytes.as_ref().unwrap().value > 1_000_000);
    assert!(usage.inodes_used.as_ref().unwrap().value > 10);
    assert_eq!(
        usage.fs_id.as_ref().unwrap().mountpoint,
        daemon.root().to_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonroot_multiarch_and_multilayer_images() {
    let registry = Registry::start();
    let (nonroot, multiarch, multilayer) =
        (images::nonroot(), images::multiarch(), images::multilayer());
    registry.push(&nonroot, "nonroot", "latest");
    registry.push(&multiarch, "multiarch", "latest");
    registry.push(&multilayer, "multilayer", "latest");
    let daemon = Daemon::for_registry(registry.addr(), "");
    let mut client = daemon.client().await;

    pull(&mut client, &registry.reference("nonroot", "latest"))
        .await
        .unwrap();
    let image = status(&mut client, &registry.reference("nonroot", "latest"))
        .await
        .image
        .unwrap();
    assert_eq!(image.uid, Some(Int64Value { value: 1000 }));

    // The index resolves to the amd64 manifest; repo_digests name the index.
    let id = pull(&mut client, &registry.reference("multiarch", "latest"))
        .await
        .unwrap();
    assert_eq!(id, config_digest(&multiarch, "amd64"));
    let image = status(&mut client, &id).await.image.unwrap();
    assert_eq!(
        image.repo_digests,
        vec![format!(
            "{}/multiarch@{}",
            registry.addr(),
            multiarch.digest
        )]
    );

    let id = pull(&mut client, &registry.reference("multilayer", "latest"))
        .await
        .unwrap();
    let info = status(&mut client, &id).await.info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    let chains = info["chainIds"].as_array().unwrap();
    assert_eq!(chains.len(), multilayer.layers("amd64").len());
    let snapshot = |chain: &serde_json::Value| {
        daemon
            .root()
            .join("snapshots")
            .join(chain.as_str().unwrap().trim_start_matches("sha256:"))
            .join("fs")
    };
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let big = std::fs::metadata(snapshot(&chains[1]).join(images::BIG_FILE_PATH)).unwrap();
    assert_eq!(big.len(), images::BIG_FILE_SIZE as u64);
    let whiteout = std::fs::symlink_metadata(snapshot(&chains[2]).join("data/old.txt")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "whiteout must be a 0/0 char device"
    );
    let opaque = xattr::get(
        snapshot(&chains[2]).join("data/dir"),
        "trusted.overlay.opaque",
    )
    .unwrap();
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]));

    // The busybox layer is shared: three images, one snapshot of it.
    let layer_dirs = entries(&daemon.root().join("snapshots"));
    // busybox base + nonroot's app layer + multilayer's two own layers.
    assert_eq!(layer_dirs, 4, "busybox base layer must be unpacked once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hub_names_go_to_the_mirror_and_keep_their_name() {
    let registry = Registry::start();
    let busybox = images::busybox();
    registry.push(&busybox, "library/busybox", "latest");
    let daemon = Daemon::for_registry(
        registry.addr(),
        &format!(
            "[registries.\"docker.io\"]\nmirrors = [\"http://{}\"]\nmirrors_only = true\n",
            registry.addr()
        ),
    );
    let mut client = daemon.client().await;
    let id = pull_image(&mut client, "busybox", None).await.unwrap();
    let image = status(&mut client, "busybox").await.image.unwrap();
    assert_eq!(image.id, id);
    assert_eq!(
        image.repo_tags,
        vec!["docker.io/library/busybox:latest".to_string()]
    );
    assert_eq!(
        image.repo_digests,
        vec![format!("docker.io/library/busybox@{}", busybox.digest)]
    );

    // A name the mirror lacks is NOT_FOUND, and with mirrors_only nothing else is asked.
    let err = pull(&mut client, "docker.io/library/absent:1")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("docker.io/library/absent:1"),
        "{}",
        err.message()
    );
    assert!(
        !err.message().contains("registry-1.docker.io"),
        "must not ask the upstream: {}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_is_by_any_name_removes_all_tags_and_data_and_is_idempotent() {
    let registry = Registry::start();
    let busybox = images::busybox();
    registry.push(&busybox, "busybox", "latest");
    registry.push(&busybox, "busybox", "v2");
    let daemon = Daemon::for_registry(registry.addr(), "");
    let mut client = daemon.client().await;
    let id = pull(&mut client, &registry.reference("busybox", "latest"))
        .await
        .unwrap();
    assert_eq!(
        pull(&mut client, &registry.reference("busybox", "v2"))
            .await
            .unwrap(),
        id
    );
    let image = status(&mut client, &id).await.image.unwrap();
    assert_eq!(image.repo_tags.len(), 2, "{:?}", image.repo_tags);

    for _ in 0..2 {
        client
            .image
            .remove_image(RemoveImageRequest {
                image: image_spec(&registry.reference("busybox", "v2")),
            })
            .await
            .unwrap();
    }
    assert!(
        status(&mut client, &registry.reference("busybox", "latest"))
            .await
            .image
            .is_none()
    );
    assert!(client
        .image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .is_empty());
    assert_eq!(
        entries(&daemon.root().join("content/blobs/sha256")),
        0,
        "blobs left after remove"
    );
    let snapshots: Vec<_> = std::fs::read_dir(daemon.root().join("snapshots"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        snapshots.is_empty(),
        "snapshots left after remove: {snapshots:?}"
    );
    client
        .image
        .remove_image(RemoveImageRequest {
            image: image_spec(&id),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_survive_a_restart_and_concurrent_pulls_share_work() {
    let registry = Registry::start();
    let multilayer = images::multilayer();
    registry.push(&multilayer, "multilayer", "latest");
    let mut daemon = Daemon::for_registry(registry.addr(), "");
    let name = registry.reference("multilayer", "latest");
    let client = daemon.client().await;
    let pulls = (0..3).map(|_| {
        let mut client = client.clone();
        let name = name.clone();
        tokio::spawn(async move { pull_image(&mut client, &name, None).await })
    });
    let ids: Vec<String> = futures_util::future::join_all(pulls)
        .await
        .into_iter()
        .map(|joined| joined.unwrap().unwrap())
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]));
    // One download per layer: the registry log shows each big blob fetched once.
    let big_layer = multilayer.layers("amd64")[1]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let fetches = registry
        .log()
        .lines()
        .filter(|line| line.contains(&format!("/blobs/{big_layer}")) && line.contains("\"GET "))
        .count();
    assert_eq!(fetches, 1, "the 50 MB layer was downloaded {fetches} times");
    drop(client);

    daemon.stop();
    daemon.spawn();
    let mut client = daemon.client().await;
    let image = status(&mut client, &name)
        .await
        .image
        .expect("image lost across restart");
    assert_eq!(image.id, ids[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_references_unknown_images_and_unreachable_registries() {
    let registry = Registry::start();
    registry.push(&images::busybox(), "busybox", "latest");
    let daemon = Daemon::for_registry(
        registry.addr(),
        "[registries.\"127.0.0.1:1\"]\ninsecure = true\n",
    );
    let mut client = daemon.client().await;

    let err = pull_image(&mut client, "Not/A:Valid:Ref", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("Not/A:Valid:Ref"),
        "{}",
        err.message()
    );
    let err = client
        .image
        .pull_image(PullImageRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("image.image"), "{}", err.message());

    let err = pull(&mut client, &registry.reference("busybox", "missing-tag"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("busybox:missing-tag"),
        "{}",
        err.message()
    );
    let err = pull(&mut client, &registry.reference("no-such-repo", "latest"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let err = pull(&mut client, "127.0.0.1:1/busybox:latest")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("127.0.0.1:1"), "{}", err.message());

    // Nothing of the failed pulls is kept.
    assert!(client
        .image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .is_empty());
    assert_eq!(entries(&daemon.root().join("content/blobs/sha256")), 0);
    assert_eq!(entries(&daemon.root().join("content/ingest")), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_and_uncompressed_layers_pull_like_gzip_ones() {
    let registry = Registry::start();
    let scratch = tempfile::tempdir().unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    builder
        .append_data(&mut header, "hello.txt", &b"hello\n"[..])
        .unwrap();
    let layer_tar = builder.into_inner().unwrap();
    let diff_id = images::digest_of(&layer_tar);
    let zstd_blob = zstd::encode_all(&layer_tar[..], 3).unwrap();
    let variants = [
        (
            "zstd",
            zstd_blob,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ),
        (
            "plain",
            layer_tar.clone(),
            "application/vnd.oci.image.layer.v1.tar",
        ),
    ];
    for (name, blob, media_type) in &variants {
        let image = images::raw_layer_image(
            &scratch.path().join(name),
            blob.clone(),
            media_type,
            &diff_id,
        );
        registry.push(&image, name, "latest");
    }
    let daemon = Daemon::for_registry(registry.addr(), "");
    let mut client = daemon.client().await;
    for (name, _, _) in &variants {
        pull(&mut client, &registry.reference(name, "latest"))
            .await
            .unwrap();
    }
    let snapshot = daemon
        .root()
        .join("snapshots")
        .join(diff_id.trim_start_matches("sha256:"))
        .join("fs/hello.txt");
    assert_eq!(std::fs::read(snapshot).unwrap(), b"hello\n");
}

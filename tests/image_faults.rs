//! Pulls that go wrong: corrupt, truncated and hostile content, authentication, a
//! registry that stalls, and a daemon killed mid-pull. Each must fail with a clear
//! status and leave nothing behind, and the next pull must work.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::images::{self, digest_of};
use common::registry::Registry;
use common::{pull_image, Daemon};
use crius::cri::api::*;
use crius::cri::client::CriClient;
use nix::sys::signal::Signal;
use tonic::Code;

/// Asserts that the daemon keeps no image, blob, ingest file or snapshot.
async fn assert_nothing_kept(daemon: &Daemon, client: &mut CriClient) {
    let listed = client
        .image
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(listed.is_empty(), "images kept: {listed:?}");
    for dir in ["content/blobs/sha256", "content/ingest", "snapshots"] {
        let left: Vec<_> = std::fs::read_dir(daemon.root().join(dir))
            .map(|entries| entries.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{dir} not empty: {left:?}");
    }
}

/// The file where Debian's registry keeps the blob `digest`.
fn registry_blob(registry: &Registry, digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    registry
        .dir()
        .join("storage/docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_layers_fail_with_data_loss_and_keep_nothing() {
    let registry = Registry::start();
    let busybox = images::busybox();
    registry.push(&busybox, "corrupt", "latest");
    registry.push(&busybox, "truncated", "latest");
    let layer = busybox.layers("amd64")[0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let daemon = Daemon::for_registry(registry.addr(), "");
    let mut client = daemon.client().await;

    // Same length, different bytes: only the digest check can catch it.
    let blob = registry_blob(&registry, &layer);
    let original = std::fs::read(&blob).unwrap();
    let mut corrupt = original.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0xff;
    std::fs::write(&blob, &corrupt).unwrap();
    let err = pull_image(&mut client, &registry.reference("corrupt", "latest"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains(&layer), "{}", err.message());
    assert_nothing_kept(&daemon, &mut client).await;

    std::fs::write(&blob, &original[..original.len() / 3]).unwrap();
    let err = pull_image(
        &mut client,
        &registry.reference("truncated", "latest"),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert_nothing_kept(&daemon, &mut client).await;

    // Once the registry serves the right bytes again, the pull works.
    std::fs::write(&blob, &original).unwrap();
    pull_image(&mut client, &registry.reference("corrupt", "latest"), None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_gzip_and_escaping_tar_are_refused_and_keep_nothing() {
    let registry = Registry::start();
    let scratch = tempfile::tempdir().unwrap();

    let not_gzip = b"this is not a gzip stream".to_vec();
    let image = images::raw_layer_image(
        &scratch.path().join("badgzip"),
        not_gzip.clone(),
        images::MEDIA_TYPE_LAYER_GZIP,
        &digest_of(&not_gzip),
    );
    registry.push(&image, "badgzip", "latest");

    // A tar whose entry climbs out of the layer root; the tar crate's builder refuses
    // such names, so the header is written by hand.
    let mut header = tar::Header::new_old();
    let name = b"../../../../tmp/crius-escape-test";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_size(4);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut tar_bytes = Vec::new();
    tar_bytes.extend_from_slice(header.as_bytes());
    tar_bytes.extend_from_slice(b"evil");
    tar_bytes.resize(tar_bytes.len() + 508 + 1024, 0);
    let escaping = images::raw_layer_image(
        &scratch.path().join("escape"),
        gzip(&tar_bytes),
        images::MEDIA_TYPE_LAYER_GZIP,
        &digest_of(&tar_bytes),
    );
    registry.push(&escaping, "escape", "latest");

    let daemon = Daemon::for_registry(registry.addr(), "");
    let mut client = daemon.client().await;
    let err = pull_image(&mut client, &registry.reference("badgzip", "latest"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert_nothing_kept(&daemon, &mut client).await;

    let err = pull_image(&mut client, &registry.reference("escape", "latest"), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(
        err.message().contains("crius-escape-test"),
        "{}",
        err.message()
    );
    assert!(
        !Path::new("/tmp/crius-escape-test").exists(),
        "the layer escaped its root"
    );
    assert_nothing_kept(&daemon, &mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required_and_accepted_in_every_form() {
    let registry = Registry::start_with_htpasswd("kube", "s3cret");
    registry.push(&images::busybox(), "private/busybox", "latest");
    let name = registry.reference("private/busybox", "latest");
    let daemon = Daemon::for_registry(registry.addr(), "");
    let mut client = daemon.client().await;

    let err = pull_image(&mut client, &name, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains(registry.addr()),
        "must name the registry: {}",
        err.message()
    );
    let wrong = AuthConfig {
        username: "kube".into(),
        password: "wrong".into(),
        ..AuthConfig::default()
    };
    assert_eq!(
        pull_image(&mut client, &name, Some(wrong))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let garbage = AuthConfig {
        auth: "%%%not base64".into(),
        ..AuthConfig::default()
    };
    let err = pull_image(&mut client, &name, Some(garbage))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    let password = AuthConfig {
        username: "kube".into(),
        password: "s3cret".into(),
        ..AuthConfig::default()
    };
    let id = pull_image(&mut client, &name, Some(password))
        .await
        .unwrap();
    client
        .image
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: id.clone(),
                ..ImageSpec::default()
            }),
        })
        .await
        .unwrap();
    use base64::Engine;
    let encoded = AuthConfig {
        auth: base64::engine::general_purpose::STANDARD.encode("kube:s3cret"),
        ..AuthConfig::default()
    };
    assert_eq!(
        pull_image(&mut client, &name, Some(encoded)).await.unwrap(),
        id
    );
    drop(daemon);

    // Credentials from the config are used when the request has none.
    let configured = Daemon::start_with(&format!(
        "[registries.\"{}\"]\ninsecure = true\nusername = \"kube\"\npassword = \"s3cret\"\n",
        registry.addr()
    ));
    let mut client = configured.client().await;
    assert_eq!(pull_image(&mut client, &name, None).await.unwrap(), id);
}

/// A TCP proxy to `target` that forwards at most `cap` bytes of responses per connection
/// and then goes silent without closing: a registry that stalls mid-download.
struct StallingProxy {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl StallingProxy {
    fn start(target: String, cap: usize) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let server = TcpStream::connect(&target).unwrap();
                let (mut client_read, mut server_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_read, &mut server_write);
                });
                let stopping = stopping.clone();
                std::thread::spawn(move || {
                    let (mut server, mut client) = (server, client);
                    let mut forwarded = 0;
                    let mut buffer = [0u8; 16384];
                    server
                        .set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    while !stopping.load(Ordering::Relaxed) {
                        match server.read(&mut buffer) {
                            Ok(0) => break,
                            Ok(n) if forwarded + n <= cap => {
                                forwarded += n;
                                if client.write_all(&buffer[..n]).is_err() {
                                    break;
                                }
                            }
                            // Past the cap: swallow the data, send nothing, keep the socket.
                            Ok(_) => forwarded = cap + 1,
                            Err(_) => {}
                        }
                    }
                });
            }
        });
        StallingProxy { addr, stop }
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_is_cancelled_after_the_progress_timeout() {
    let registry = Registry::start();
    registry.push(&images::multilayer(), "multilayer", "latest");
    let proxy = StallingProxy::start(registry.addr().to_string(), 2 * 1024 * 1024);
    let daemon = Daemon::for_registry(&proxy.addr, "[image]\npull_progress_timeout_secs = 2\n");
    let mut client = daemon.client().await;
    let started = Instant::now();
    let err = pull_image(
        &mut client,
        &format!("{}/multilayer:latest", proxy.addr),
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("stalled"), "{}", err.message());
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_nothing_kept(&daemon, &mut client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_pull_cleans_up_at_the_next_start() {
    let registry = Registry::start();
    registry.push(&images::multilayer(), "multilayer", "latest");
    let name = registry.reference("multilayer", "latest");
    let mut daemon = Daemon::for_registry(registry.addr(), "");
    let client = daemon.client().await;
    let pulling = {
        let mut client = client.clone();
        let name = name.clone();
        tokio::spawn(async move { pull_image(&mut client, &name, None).await })
    };
    // Kill it once the download has visibly started.
    let ingest = daemon.root().join("content/ingest");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&ingest).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the pull never started writing");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    daemon.stop_with(Signal::SIGKILL);
    assert!(pulling.await.unwrap().is_err());
    drop(client);

    daemon.spawn();
    let mut client = daemon.client().await;
    assert_nothing_kept(&daemon, &mut client).await;
    pull_image(&mut client, &name, None).await.unwrap();
}

/// A tmpfs of `megabytes`, mounted for one test and unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir.path(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={megabytes}m").as_str()),
        )
        .expect("mount a tmpfs");
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        nix::mount::umount(self.dir.path()).expect("unmount the test tmpfs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_pull_and_leaves_the_store_consistent() {
    let registry = Registry::start();
    registry.push(&images::busybox(), "busybox", "latest");
    registry.push(&images::multilayer(), "multilayer", "latest");
    // Room for busybox (about 3 MB packed and unpacked) but not for the 50 MiB layer.
    let disk = SmallDisk::mount(24);
    {
        let root = disk.dir.path().join("root");
        let mut daemon = Daemon::start_with_root(
            &root,
            &format!("[registries.\"{}\"]\ninsecure = true\n", registry.addr()),
        );
        let mut client = daemon.client().await;
        let busybox = pull_image(&mut client, &registry.reference("busybox", "latest"), None)
            .await
            .unwrap();
        let err = pull_image(
            &mut client,
            &registry.reference("multilayer", "latest"),
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(
            err.message().contains("No space left on device"),
            "{}",
            err.message()
        );
        // The earlier image is intact and the failed one left nothing.
        let listed = client
            .image
            .list_images(ListImagesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .images;
        assert_eq!(
            listed
                .iter()
                .map(|image| image.id.as_str())
                .collect::<Vec<_>>(),
            vec![busybox.as_str()]
        );
        assert_eq!(
            std::fs::read_dir(root.join("content/ingest"))
                .unwrap()
                .count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(root.join("content/blobs/sha256"))
                .unwrap()
                .count(),
            3,
            "busybox's manifest, config and layer"
        );
        drop(client);
        // And after a restart it is all still there.
        daemon.stop();
        daemon.spawn();
        let mut client = daemon.client().await;
        assert_eq!(
            client
                .image
                .list_images(ListImagesRequest::default())
                .await
                .unwrap()
                .into_inner()
                .images
                .len(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_flow_and_registry_tokens() {
    let registry = Registry::start_with_token_auth("kube", "t0ken");
    registry.push(&images::busybox(), "private/busybox", "latest");
    let name = registry.reference("private/busybox", "latest");
    let daemon = Daemon::for_registry(registry.addr(), "");
    let mut client = daemon.client().await;
    let remove = |client: &mut CriClient, id: String| {
        let mut client = client.clone();
        async move {
            let request = RemoveImageRequest {
                image: Some(ImageSpec {
                    image: id,
                    ..ImageSpec::default()
                }),
            };
            client.image.remove_image(request).await.unwrap();
        }
    };

    // Anonymous: the token service refuses, and the error names the registry.
    let err = pull_image(&mut client, &name, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains(registry.addr()), "{}", err.message());

    // Username and password: exchanged for a token at the realm the registry names.
    let password = AuthConfig {
        username: "kube".into(),
        password: "t0ken".into(),
        ..AuthConfig::default()
    };
    let id = pull_image(&mut client, &name, Some(password))
        .await
        .unwrap();
    remove(&mut client, id.clone()).await;

    // An identity token goes to the token service in place of the password.
    let identity = AuthConfig {
        username: "kube".into(),
        identity_token: "t0ken".into(),
        ..AuthConfig::default()
    };
    assert_eq!(
        pull_image(&mut client, &name, Some(identity))
            .await
            .unwrap(),
        id
    );
    remove(&mut client, id.clone()).await;

    // A registry token is sent to the registry as it is.
    let token = AuthConfig {
        registry_token: registry.token_for("private/busybox"),
        ..AuthConfig::default()
    };
    assert_eq!(
        pull_image(&mut client, &name, Some(token)).await.unwrap(),
        id
    );
    let forged = AuthConfig {
        registry_token: "not.a.token".into(),
        ..AuthConfig::default()
    };
    remove(&mut client, id.clone()).await;
    assert_eq!(
        pull_image(&mut client, &name, Some(forged))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

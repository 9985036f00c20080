//! Checks the test harness itself: the per-test registry and the
//! deterministic test images that the runtime's integration tests pull.

mod common;

use std::path::Path;

use common::images::{self, TestImage, BIG_FILE_PATH};
use common::registry::Registry;
use serde_json::Value;

fn repo_for(image: &TestImage) -> String {
    format!("crius-test/{}", image.name)
}

#[test]
fn images_push_and_registry_serves_their_digests() {
    let registry = Registry::start();
    for image in images::all() {
        let repo = repo_for(&image);
        registry.push(&image, &repo, image.tag);
        let (digest, raw) = registry.manifest(&repo, image.tag);
        assert_eq!(
            digest, image.digest,
            "registry serves {repo}:{} with a different digest",
            image.tag
        );
        // The served bytes are the layout's bytes, not a re-serialisation.
        assert_eq!(
            raw,
            image.top_bytes(),
            "{repo}: served manifest bytes differ"
        );
    }
}

#[test]
fn images_are_deterministic() {
    let first = tempfile::tempdir().expect("temp dir for first build");
    let second = tempfile::tempdir().expect("temp dir for second build");
    for cached in images::all() {
        // Two independent builds at once: halves the wall time on a
        // multi-core machine and shows the builder shares no mutable state.
        let (a, b) = std::thread::scope(|scope| {
            let a =
                scope.spawn(|| images::build_into(cached.name, &first.path().join(cached.name)));
            let b = images::build_into(cached.name, &second.path().join(cached.name));
            (a.join().expect("first build"), b)
        });
        assert_eq!(a.digest, b.digest, "{}: two builds differ", cached.name);
        assert_eq!(
            a.digest,
            cached.digest,
            "{}: fresh build differs from the cached layout at {}",
            cached.name,
            cached.layout.display()
        );
        assert_eq!(
            blob_names(&a.layout),
            blob_names(&b.layout),
            "{}: blob sets differ",
            cached.name
        );
    }
}

fn blob_names(layout: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("list blobs")
        .map(|e| {
            e.expect("blob dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn registry_serves_multiarch_index() {
    let registry = Registry::start();
    let image = images::multiarch();
    registry.push(&image, "crius-test/multiarch", image.tag);
    let (_, raw) = registry.manifest("crius-test/multiarch", image.tag);
    let index: Value = serde_json::from_slice(&raw).expect("served index is JSON");
    assert_eq!(index["mediaType"], images::MEDIA_TYPE_INDEX);
    let mut platforms: Vec<String> = index["manifests"]
        .as_array()
        .expect("index lists manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().expect("platform os"),
                m["platform"]["architecture"]
                    .as_str()
                    .expect("platform architecture")
            )
        })
        .collect();
    platforms.sort();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    // linux/amd64 is exactly the busybox image.
    assert_eq!(image.manifest_digest("amd64"), images::busybox().digest);
    assert_eq!(image.config("arm64")["architecture"], "arm64");
}

#[test]
fn multilayer_has_big_layer_whiteout_and_opaque_marker() {
    let image = images::multilayer();
    let layers = image.layers("amd64");
    assert!(layers.len() >= 3, "only {} layers", layers.len());
    let config = image.config("amd64");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(layers.len()),
        "one diff_id per layer"
    );

    let mut paths = Vec::new();
    for layer in &layers {
        assert_eq!(layer["mediaType"], images::MEDIA_TYPE_LAYER_GZIP);
        let digest = layer["digest"].as_str().expect("layer digest");
        let entries = image.layer_entries(digest);
        let blob_len = std::fs::metadata(image.blob_path(digest))
            .expect("layer blob")
            .len();
        assert_eq!(
            layer["size"].as_u64(),
            Some(blob_len),
            "descriptor size of {digest}"
        );
        paths.push(
            entries
                .into_iter()
                .map(|e| (e.path, e.size))
                .collect::<Vec<_>>(),
        );
    }
    let big = layers
        .iter()
        .position(|l| l["size"].as_u64().expect("layer size") >= 50_000_000)
        .expect("a layer of at least 50 MB");
    assert!(
        paths[big]
            .iter()
            .any(|(p, size)| p == BIG_FILE_PATH && *size == images::BIG_FILE_SIZE as u64),
        "big layer lacks the 50 MiB file"
    );
    let all: Vec<&str> = paths.iter().flatten().map(|(p, _)| p.as_str()).collect();
    assert!(
        all.contains(&"data/.wh.old.txt"),
        "no whiteout for data/old.txt"
    );
    assert!(
        all.contains(&"data/dir/.wh..wh..opq"),
        "no opaque marker in data/dir"
    );
    assert!(all.contains(&"data/dir/new.txt"));
}

#[test]
fn busybox_layer_has_hard_links_and_interpreter() {
    let image = images::busybox();
    let layers = image.layers("amd64");
    assert_eq!(layers.len(), 1);
    let entries = image.layer_entries(layers[0]["digest"].as_str().expect("layer digest"));
    let find = |path: &str| {
        entries
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{path} missing from busybox layer"))
    };

    let sh = find("bin/sh");
    assert_eq!(sh.kind, tar::EntryType::Link, "bin/sh is not a hard link");
    assert_eq!(sh.link_name.as_deref(), Some("bin/busybox"));
    let busybox = find("bin/busybox");
    assert_eq!(busybox.kind, tar::EntryType::Regular);
    let position = |path: &str| entries.iter().position(|e| e.path == path).expect("entry");
    assert!(
        position("bin/busybox") < position("bin/sh"),
        "hard link precedes its target"
    );

    let host = images::host_busybox();
    let interpreter = find(host.interpreter.trim_start_matches('/'));
    assert_eq!(
        interpreter.kind,
        tar::EntryType::Regular,
        "interpreter is not a regular file"
    );
    assert!(interpreter.size > 0);
    for (lib, bytes) in &host.libraries {
        assert_eq!(
            find(lib.trim_start_matches('/')).size,
            bytes.len() as u64,
            "{lib}"
        );
    }
    assert_eq!(find("tmp").mode & 0o7777, 0o1777);
    let config = image.config("amd64");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
}

#[test]
fn dropped_registry_leaves_nothing_behind() {
    let registry = Registry::start();
    let pid = registry.pid();
    let dir = registry.dir().to_path_buf();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(dir.exists());
    drop(registry);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "registry process {pid} still exists"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
}

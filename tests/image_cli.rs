//! The Docker-style image workflow of the `crius` CLI: pull with progress, images, inspect,
//! rmi, and save / load round trips that other tools (skopeo) read and write too.

mod common;

use std::process::{Command, Stdio};

use common::images;
use common::registry::Registry;
use common::{run_binary, Daemon};

const CRIUS: &str = env!("CARGO_BIN_EXE_crius");

/// Runs the CLI against `daemon`; returns (success, stdout, stderr).
fn crius(daemon: &Daemon, args: &[&str]) -> (bool, String, String) {
    let address = daemon.address();
    let mut all = vec!["--address", address.as_str()];
    all.extend_from_slice(args);
    let (status, stdout, stderr) = run_binary(CRIUS, &all);
    (status.success(), stdout, stderr)
}

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pull_images_inspect_and_rmi() {
    let registry = Registry::start();
    let multilayer = images::multilayer();
    registry.push(&multilayer, "multilayer", "v1");
    let daemon = Daemon::for_registry(registry.addr(), "");
    let name = registry.reference("multilayer", "v1");
    let id = multilayer.manifest("amd64")["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();

    let (ok, stdout, stderr) = crius(&daemon, &["pull", &name]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&id), "summary must name the id: {stdout}");
    assert_eq!(
        stderr.matches("Pull complete").count(),
        3,
        "one line per layer: {stderr}"
    );
    // Pulling again finds every layer present.
    let (ok, _, stderr) = crius(&daemon, &["pull", &name]);
    assert!(ok);
    assert_eq!(stderr.matches("Already exists").count(), 3, "{stderr}");

    let (ok, stdout, _) = crius(&daemon, &["images"]);
    assert!(ok);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE") && lines[0].contains("IMAGE ID") && lines[0].contains("SIZE")
    );
    let row = lines[1];
    assert!(
        row.starts_with(&format!("{}/multilayer", registry.addr())) && row.contains("v1"),
        "{row}"
    );
    assert!(
        row.contains(&id["sha256:".len().."sha256:".len() + 12]),
        "{row}"
    );
    assert!(row.contains("MB"), "{row}");
    let (_, stdout, _) = crius(&daemon, &["images", "--digests"]);
    assert!(stdout.contains(&multilayer.digest), "{stdout}");
    let (_, stdout, _) = crius(&daemon, &["images", "-q"]);
    assert_eq!(stdout.trim(), &id["sha256:".len().."sha256:".len() + 12]);

    let (ok, stdout, _) = crius(&daemon, &["inspect", &name]);
    assert!(ok);
    let details: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(details["Id"], id);
    assert_eq!(details["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(details["Config"]["config"]["Cmd"][0], "sh");

    let (ok, stdout, _) = crius(&daemon, &["rmi", &id[7..19]]);
    assert!(ok);
    assert!(
        stdout.contains(&format!("Untagged: {name}")) && stdout.contains(&format!("Deleted: {id}")),
        "{stdout}"
    );
    let (ok, _, stderr) = crius(&daemon, &["rmi", &name]);
    assert!(!ok);
    assert!(stderr.contains("no such image"), "{stderr}");
    let (ok, _, stderr) = crius(&daemon, &["inspect", "nothing:here"]);
    assert!(!ok && stderr.trim().lines().count() == 1, "{stderr}");
}

#[test]
fn save_is_readable_by_skopeo_and_loads_back() {
    let registry = Registry::start();
    let (busybox, nonroot) = (images::busybox(), images::nonroot());
    registry.push(&busybox, "busybox", "latest");
    registry.push(&nonroot, "nonroot", "latest");
    let daemon = Daemon::for_registry(registry.addr(), "");
    let busybox_name = registry.reference("busybox", "latest");
    let nonroot_name = registry.reference("nonroot", "latest");
    assert!(crius(&daemon, &["pull", &busybox_name]).0);
    assert!(crius(&daemon, &["pull", &nonroot_name]).0);

    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("images.tar");
    let archive_arg = archive.to_str().unwrap();
    let (ok, _, stderr) = crius(
        &daemon,
        &["save", "-o", archive_arg, &busybox_name, &nonroot_name],
    );
    assert!(ok, "{stderr}");

    // Other tools read it both as an OCI layout and as a docker save tarball.
    let busybox_id = busybox.manifest("amd64")["config"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let config = skopeo(&[
        "inspect",
        "--raw",
        "--config",
        &format!("oci-archive:{archive_arg}:{busybox_name}"),
    ]);
    assert_eq!(images::digest_of(config.as_bytes()), busybox_id);
    let docker_view = skopeo(&[
        "inspect",
        &format!("docker-archive:{archive_arg}:{busybox_name}"),
    ]);
    assert!(
        docker_view.contains("\"Architecture\": \"amd64\""),
        "{docker_view}"
    );

    assert!(crius(&daemon, &["rmi", &busybox_name, &nonroot_name]).0);
    let (ok, stdout, stderr) = crius(&daemon, &["load", "-i", archive_arg]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("Loaded image: {busybox_name}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("Loaded image: {nonroot_name}")),
        "{stdout}"
    );
    let (_, stdout, _) = crius(&daemon, &["inspect", &busybox_name]);
    let details: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(details["Id"], busybox_id, "the id survives save and load");
    let (_, stdout, _) = crius(&daemon, &["inspect", &nonroot_name]);
    let details: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(details["Uid"], 1000);

    // The same archive through standard input.
    assert!(crius(&daemon, &["rmi", &busybox_name, &nonroot_name]).0);
    let address = daemon.address();
    let piped = Command::new(CRIUS)
        .args(["--address", &address, "load"])
        .stdin(std::fs::File::open(&archive).unwrap())
        .output()
        .unwrap();
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert!(crius(&daemon, &["inspect", &busybox_name]).0);
}

#[test]
fn loads_archives_written_by_skopeo_and_refuses_garbage() {
    let multilayer = images::multilayer();
    let daemon = Daemon::start();
    let scratch = tempfile::tempdir().unwrap();
    let layout = format!("oci:{}:{}", multilayer.layout.display(), multilayer.tag);
    let docker_archive = scratch.path().join("docker.tar");
    skopeo(&[
        "copy",
        "--quiet",
        &layout,
        &format!(
            "docker-archive:{}:example.com/app:2",
            docker_archive.display()
        ),
    ]);
    let (ok, stdout, stderr) = crius(&daemon, &["load", "-i", docker_archive.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("Loaded image: example.com/app:2"),
        "{stdout}"
    );
    let (_, stdout, _) = crius(&daemon, &["inspect", "example.com/app:2"]);
    let details: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        details["Id"],
        multilayer.manifest("amd64")["config"]["digest"]
    );
    assert_eq!(details["Layers"].as_array().unwrap().len(), 3);

    let oci_archive = scratch.path().join("oci.tar");
    skopeo(&[
        "copy",
        "--quiet",
        &layout,
        &format!(
            "oci-archive:{}:docker.io/library/app:3",
            oci_archive.display()
        ),
    ]);
    let (ok, stdout, stderr) = crius(&daemon, &["load", "-i", oci_archive.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("docker.io/library/app:3"), "{stdout}");

    let garbage = scratch.path().join("garbage.tar");
    std::fs::write(&garbage, b"definitely not a tar archive").unwrap();
    let (ok, _, stderr) = crius(&daemon, &["load", "-i", garbage.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("InvalidArgument") || stderr.contains("invalid argument"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(daemon.root().join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
}

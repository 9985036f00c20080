//! OCI bundles for the shim tests: a rootfs of the host's busybox and runc's default
//! spec.

use std::path::{Path, PathBuf};

use super::images::host_busybox;

/// Debian's runc, which writes the default spec.
pub const RUNC: &str = "/usr/sbin/runc";

/// An OCI bundle running `args` in a rootfs of Debian's dynamic busybox, its libraries and
/// hard-linked applets; the spec is runc's default with a few changes.
pub fn busybox_bundle(dir: &Path, args: &[&str]) -> PathBuf {
    let bundle = dir.join(args.join("-").replace(['/', ' ', ';', '>', '&', '\''], "_"));
    let rootfs = bundle.join("rootfs");
    let busybox = host_busybox();
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::write(rootfs.join("bin/busybox"), &busybox.binary).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        rootfs.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for applet in ["sh", "echo", "sleep", "cat", "stty"] {
        std::fs::hard_link(rootfs.join("bin/busybox"), rootfs.join("bin").join(applet)).unwrap();
    }
    for (path, bytes) in &busybox.libraries {
        let target = rootfs.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, bytes).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let status = std::process::Command::new(RUNC)
        .args(["spec", "--bundle"])
        .arg(&bundle)
        .status()
        .unwrap();
    assert!(status.success());
    let path = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
    std::fs::write(&path, spec.to_string()).unwrap();
    bundle
}

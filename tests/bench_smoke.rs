//! Checks the benchmark harness (`crius-bench`) itself, against crius alone: every
//! scenario runs, prints its row and lands in the JSON report. The comparison with
//! containerd is `benches/run.sh`; it is not part of the test suite.
//!
//! Also holds the step with which `benches/run.sh` gets the test images: the bench
//! binary cannot include `common::images` (which needs the dev-only `tempfile`), and a
//! copy of it could drift from the images the tests pull.

mod common;

use std::path::PathBuf;

use common::images;
use common::registry::Registry;
use common::Daemon;
use serde_json::Value;

const SCENARIOS: [&str; 7] = [
    "pull",
    "idle-memory",
    "list-images",
    "pod-lifecycle",
    "pods-20",
    "pod-memory",
    "list-containers",
];

#[test]
fn bench_measures_every_scenario_against_crius() {
    let registry = Registry::start();
    registry.push(&images::multilayer(), "multilayer", "latest");
    registry.push(&images::busybox(), "busybox", "latest");
    let daemon = Daemon::start_with(&format!(
        "log_level = \"info\"\n[registries.\"{}\"]\ninsecure = true\n",
        registry.addr()
    ));
    let out = tempfile::tempdir().expect("temp dir for the JSON report");
    let json_path = out.path().join("bench.json");
    let pid = daemon.pid().to_string();
    let root = daemon.root();
    let (status, stdout, stderr) = common::run_binary(
        env!("CARGO_BIN_EXE_crius-bench"),
        &[
            "--crius",
            &daemon.address(),
            "--image",
            &registry.reference("multilayer", "latest"),
            "--list-image",
            &registry.reference("busybox", "latest"),
            "--pod-image",
            &registry.reference("busybox", "latest"),
            "--log-dir",
            &out.path().join("logs").to_string_lossy(),
            "--iterations",
            "1",
            "--idle-secs",
            "0",
            // Small numbers: this checks the harness, not the runtime at scale.
            "--batch",
            "3",
            "--memory-pods",
            "2,3",
            "--list-at",
            "2,4",
            "--crius-handler",
            "runc",
            "--scenarios",
            &SCENARIOS.join(","),
            "--crius-pid",
            &pid,
            "--crius-root",
            &root.to_string_lossy(),
            "--json",
            &json_path.to_string_lossy(),
        ],
    );
    assert!(
        status.success(),
        "crius-bench failed ({status}):\n{stdout}\n{stderr}\ndaemon log:\n{}",
        daemon.logs()
    );

    for scenario in SCENARIOS {
        let row = stdout
            .lines()
            .find(|line| line.starts_with(&format!("| {scenario} |")))
            .unwrap_or_else(|| panic!("no row for {scenario} in:\n{stdout}"));
        // `min / median / max (n)`: three positive numbers and the sample count.
        let cell = row.split('|').nth(4).expect("crius column").trim();
        let numbers: Vec<f64> = cell
            .split(['/', '(', ')'])
            .filter_map(|part| part.trim().parse().ok())
            .collect();
        assert_eq!(numbers.len(), 4, "{scenario}: bad cell {cell:?} in {row}");
        assert!(
            numbers[..3].iter().all(|value| *value > 0.0),
            "{scenario}: {row}"
        );
    }

    let text = std::fs::read_to_string(&json_path).expect("crius-bench wrote its JSON");
    let report: Value = serde_json::from_str(&text).expect("the JSON report parses");
    let metrics = report["metrics"].as_array().expect("metrics array");
    for scenario in SCENARIOS {
        let metric = metrics
            .iter()
            .find(|metric| metric["scenario"] == scenario)
            .unwrap_or_else(|| panic!("no {scenario} metric in {text}"));
        assert!(
            metric["results"]["crius"]["median"].as_f64().unwrap_or(0.0) > 0.0,
            "{scenario}: {metric}"
        );
    }
    assert_eq!(report["runtimes"][0]["name"], "crius");
    assert_eq!(report["runtimes"][1]["name"], "crius (runc)");
}

/// Not a test: `benches/run.sh` runs it (`-- --ignored --exact prepare_bench_images`) to
/// build the benchmark's images with the test suite's builder, and reads their OCI
/// layouts from the file that `CRIUS_BENCH_LAYOUTS` names, one `name layout tag` a line.
#[test]
#[ignore = "a step of benches/run.sh"]
fn prepare_bench_images() {
    let list: String = [images::multilayer(), images::busybox()]
        .iter()
        .map(|image| format!("{} {} {}\n", image.name, image.layout.display(), image.tag))
        .collect();
    if let Some(path) = std::env::var_os("CRIUS_BENCH_LAYOUTS") {
        std::fs::write(PathBuf::from(path), list).expect("write the layout list");
    }
}

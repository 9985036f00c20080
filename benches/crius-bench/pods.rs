//! The pod scenarios: what kubelet does on every pod start and stop, at scale, and what
//! pods cost in memory. Every pod runs one busybox `sleep` container on the runtime's pod
//! network (crius's built-in bridge, containerd's CNI bridge).
//!
//! Pods are named `<scenario>-<runtime>-<n>`, so that runtimes never collide, and each
//! scenario removes every pod it made before it returns.

use std::time::{Duration, Instant};

use futures_util::future::try_join_all;

use crate::error::BenchError;
use crate::procfs;
use crate::report::Metric;
use crate::runtime::Runtime;
use crate::Bench;

const SLEEP: [&str; 2] = ["sleep", "3600"];
/// How long pod-memory's pods sit without calls before their shims are measured again.
const SHIM_SETTLE: Duration = Duration::from_secs(30);

/// Containers per pod in `list-containers`.
const LIST_CONTAINERS_PER_POD: usize = 10;
const LIST_CALLS: usize = 100;

/// RunPodSandbox, CreateContainer + StartContainer, ExecSync `echo hi`, and StopPodSandbox
/// + RemovePodSandbox, timed one by one; iteration 0 is an untimed warm-up.
pub async fn pod_lifecycle(bench: &Bench) -> Result<Vec<Metric>, BenchError> {
    let image = pod_image(bench, "pod-lifecycle").await?;
    let count = bench.runtimes.len();
    let mut run = Metric::new("RunPodSandbox (pod network)", "ms", count);
    let mut create_start = Metric::new("CreateContainer + StartContainer", "ms", count);
    let mut total = Metric::new("pod + container start", "ms", count);
    let mut exec = Metric::new("ExecSync echo hi", "ms", count);
    let mut stop = Metric::new("StopPodSandbox + RemovePodSandbox", "ms", count);
    for iteration in 0..=bench.iterations {
        for (index, runtime) in bench.runtimes.iter().enumerate() {
            let name = format!("life-{}-{iteration}", runtime.name);
            let started = Instant::now();
            let pod = runtime.run_pod(&name, &bench.log_dir).await?;
            let ran = started.elapsed();
            let container = runtime
                .create_container(&pod, &name, &bench.log_dir, "sleeper", image, &SLEEP)
                .await?;
            runtime.start_container(&container).await?;
            let running = started.elapsed();
            let exec_started = Instant::now();
            runtime.exec_sync(&container, &["echo", "hi"]).await?;
            let executed = exec_started.elapsed();
            let stop_started = Instant::now();
            runtime.remove_pod(&pod).await?;
            let stopped = stop_started.elapsed();
            if iteration > 0 {
                run.samples[index].push(ms(ran));
                create_start.samples[index].push(ms(running - ran));
                total.samples[index].push(ms(running));
                exec.samples[index].push(ms(executed));
                stop.samples[index].push(ms(stopped));
            }
        }
    }
    Ok(vec![run, create_start, total, exec, stop])
}

/// `bench.batch` (20) pods with a running container each, started one after another and
/// then all at once; the time until the last container runs. Removal is not timed.
pub async fn pods_20(bench: &Bench) -> Result<Vec<Metric>, BenchError> {
    let image = pod_image(bench, "pods-20").await?;
    let count = bench.runtimes.len();
    let batch = bench.batch;
    let mut serial = Metric::new(
        format!("{batch} pods × 1 container, one after another"),
        "ms",
        count,
    );
    let mut parallel = Metric::new(format!("{batch} pods × 1 container, at once"), "ms", count);
    for iteration in 0..=bench.iterations {
        for (index, runtime) in bench.runtimes.iter().enumerate() {
            let started = Instant::now();
            let mut pods = Vec::with_capacity(batch);
            for n in 0..batch {
                let name = format!("serial-{}-{iteration}-{n}", runtime.name);
                pods.push(start_pod(runtime, bench, image, &name).await?);
            }
            let one_by_one = started.elapsed();
            remove_all(runtime, &pods).await?;

            let started = Instant::now();
            let pods = try_join_all((0..batch).map(|n| {
                let name = format!("batch-{}-{iteration}-{n}", runtime.name);
                async move { start_pod(runtime, bench, image, &name).await }
            }))
            .await?;
            let at_once = started.elapsed();
            remove_all(runtime, &pods).await?;
            if iteration > 0 {
                serial.samples[index].push(ms(one_by_one));
                parallel.samples[index].push(ms(at_once));
            }
        }
    }
    Ok(vec![serial, parallel])
}

/// Daemon RSS with each of `bench.memory_pods` (10, 100) pods running, sampled once a
/// second over `bench.idle`, and what each pod of the first step costs beside its
/// container: the shim's RSS and PSS (containerd: containerd-shim-runc-v2) and the pod's
/// whole overhead PSS (containerd: shim + pause process; crius has no pause process).
pub async fn pod_memory(bench: &Bench) -> Result<Vec<Metric>, BenchError> {
    let image = pod_image(bench, "pod-memory").await?;
    let count = bench.runtimes.len();
    let mut daemon: Vec<Metric> = bench
        .memory_pods
        .iter()
        .map(|pods| Metric::new(format!("daemon RSS, {pods} pods"), "MiB", count))
        .collect();
    let mut shim_rss = Metric::new("shim RSS per pod", "MiB", count);
    let mut shim_pss = Metric::new("shim PSS per pod", "MiB", count);
    let mut overhead = Metric::new("pod overhead PSS (shim + pause)", "MiB", count);
    let idle_label = format!("idle {} s", SHIM_SETTLE.as_secs());
    let mut settled_rss = Metric::new(format!("shim RSS per pod, {idle_label}"), "MiB", count);
    let mut settled_pss = Metric::new(format!("shim PSS per pod, {idle_label}"), "MiB", count);
    for (index, runtime) in bench.runtimes.iter().enumerate() {
        let daemon_pid = runtime.pid.ok_or(BenchError::MissingPid {
            scenario: "pod-memory",
            runtime: runtime.name,
        })?;
        let mut pods = Vec::new();
        for (step, target) in bench.memory_pods.iter().enumerate() {
            while pods.len() < *target {
                let name = format!("mem-{}-{}", runtime.name, pods.len());
                pods.push(start_pod(runtime, bench, image, &name).await?);
            }
            let seconds = bench.idle.as_secs();
            for _ in 0..seconds.max(1) {
                // Also lets start-up allocations settle before the first sample.
                if seconds > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                daemon[step].samples[index]
                    .push(procfs::memory(daemon_pid)?.rss_kib as f64 / 1024.0);
            }
            if step == 0 {
                let mut shims = Vec::new();
                for pod in &pods {
                    let pid = runtime.pod_pid(pod).await?;
                    // crius reports its shim; containerd its pause process, child of the shim.
                    let (shim, pause) = if runtime.name.starts_with("crius") {
                        (pid, None)
                    } else {
                        (procfs::parent(pid)?, Some(pid))
                    };
                    let shim_memory = procfs::memory(shim)?;
                    let pause_pss = match pause {
                        Some(pause) => procfs::memory(pause)?.pss_kib,
                        None => 0,
                    };
                    shim_rss.samples[index].push(shim_memory.rss_kib as f64 / 1024.0);
                    shim_pss.samples[index].push(shim_memory.pss_kib as f64 / 1024.0);
                    overhead.samples[index].push((shim_memory.pss_kib + pause_pss) as f64 / 1024.0);
                    shims.push(shim);
                }
                // What a pod costs for most of its life: its shim after a while without
                // calls (crius's gives back its code pages after 10 s idle; Go's runtime
                // returns memory on its own schedule).
                tokio::time::sleep(SHIM_SETTLE.saturating_sub(bench.idle)).await;
                for shim in shims {
                    let shim_memory = procfs::memory(shim)?;
                    settled_rss.samples[index].push(shim_memory.rss_kib as f64 / 1024.0);
                    settled_pss.samples[index].push(shim_memory.pss_kib as f64 / 1024.0);
                }
            }
        }
        remove_all(runtime, &pods).await?;
    }
    daemon.extend([shim_rss, shim_pss, overhead, settled_rss, settled_pss]);
    Ok(daemon)
}

/// ListContainers and ListPodSandbox latency with each of `bench.list_at` (100, 500)
/// containers present (10 per pod, created but not started: listing cost does not depend
/// on the state).
pub async fn list_containers(bench: &Bench) -> Result<Vec<Metric>, BenchError> {
    let image = pod_image(bench, "list-containers").await?;
    let count = bench.runtimes.len();
    let mut metrics = Vec::new();
    let mut pods: Vec<Vec<String>> = vec![Vec::new(); count];
    for &target in &bench.list_at {
        let pod_count = target.div_ceil(LIST_CONTAINERS_PER_POD);
        for (index, runtime) in bench.runtimes.iter().enumerate() {
            while pods[index].len() < pod_count {
                let name = format!("list-{}-{}", runtime.name, pods[index].len());
                let pod = runtime.run_pod(&name, &bench.log_dir).await?;
                for n in 0..LIST_CONTAINERS_PER_POD {
                    runtime
                        .create_container(
                            &pod,
                            &name,
                            &bench.log_dir,
                            &format!("c{n}"),
                            image,
                            &SLEEP,
                        )
                        .await?;
                }
                pods[index].push(pod);
            }
        }
        let mut containers =
            Metric::new(format!("ListContainers, {target} containers"), "ms", count);
        let mut sandboxes = Metric::new(format!("ListPodSandbox, {pod_count} pods"), "ms", count);
        for _ in 0..LIST_CALLS {
            for (index, runtime) in bench.runtimes.iter().enumerate() {
                let started = Instant::now();
                runtime.list_containers().await?;
                containers.samples[index].push(ms(started.elapsed()));
                let started = Instant::now();
                runtime.list_pods().await?;
                sandboxes.samples[index].push(ms(started.elapsed()));
            }
        }
        metrics.push(containers);
        metrics.push(sandboxes);
    }
    for (runtime, ids) in bench.runtimes.iter().zip(&pods) {
        for id in ids {
            runtime.remove_pod(id).await?;
        }
    }
    Ok(metrics)
}

/// A pod with one running `sleep` container; its id.
async fn start_pod(
    runtime: &Runtime,
    bench: &Bench,
    image: &str,
    name: &str,
) -> Result<String, BenchError> {
    let id = runtime.run_pod(name, &bench.log_dir).await?;
    let container = runtime
        .create_container(&id, name, &bench.log_dir, "sleeper", image, &SLEEP)
        .await?;
    runtime.start_container(&container).await?;
    Ok(id)
}

async fn remove_all(runtime: &Runtime, pods: &[String]) -> Result<(), BenchError> {
    for pod in pods {
        runtime.remove_pod(pod).await?;
    }
    Ok(())
}

/// The pod image, pulled on every runtime.
async fn pod_image<'a>(bench: &'a Bench, scenario: &'static str) -> Result<&'a str, BenchError> {
    let image = bench
        .pod_image
        .as_deref()
        .ok_or(BenchError::NoPodImage { scenario })?;
    for runtime in &bench.runtimes {
        if runtime.image_status(image).await?.is_none() {
            runtime.pull_image(image).await?;
        }
    }
    Ok(image)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

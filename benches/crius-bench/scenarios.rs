//! The scenarios: one async function each, `fn(&Bench) -> Result<Vec<Metric>, _>`.
//!
//! A scenario prepares what it needs on every runtime itself (it may run alone), then
//! measures the runtimes interleaved, one sample of each in turn, and returns one
//! [`Metric`] per measured quantity. Adding one means a function here (or in `pods` for
//! the pod scenarios), a variant in `Scenario`, and the CRI calls it needs in [`Runtime`].

use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::procfs;
use crate::report::Metric;
use crate::runtime::Runtime;
use crate::Bench;

const MIB: f64 = 1024.0 * 1024.0;
/// ListImages calls timed per runtime.
const LIST_CALLS: usize = 100;
/// Untimed ListImages calls first, so that no runtime pays for a cold cache in the samples.
const LIST_WARMUP_CALLS: usize = 5;

/// Cold pulls of `bench.image`: before every pull the image is removed and (when the
/// root dir is known) the runtime's content is checked to be gone, so each pull really
/// downloads and unpacks every layer. Iteration 0 is an untimed warm-up: it warms the
/// registry's page cache and each daemon's connection pools for all the timed ones.
pub async fn pull(bench: &Bench) -> Result<Vec<Metric>, BenchError> {
    let count = bench.runtimes.len();
    let mut time = Metric::new("cold PullImage", "ms", count);
    let mut throughput = Metric::new("pull throughput (compressed bytes)", "MiB/s", count);
    let mut baselines = Vec::with_capacity(count);
    for runtime in &bench.runtimes {
        ensure_absent(runtime, &bench.image).await?;
        baselines.push(match &runtime.root {
            Some(root) => Some(procfs::dir_bytes(root)?),
            None => None,
        });
    }
    let mut sizes: Vec<Option<u64>> = vec![None; count];
    for iteration in 0..=bench.iterations {
        for (index, runtime) in bench.runtimes.iter().enumerate() {
            ensure_absent(runtime, &bench.image).await?;
            if let (Some(root), Some(baseline), Some(size)) =
                (&runtime.root, baselines[index], sizes[index])
            {
                // Leftover content would be at least the image's compressed size; half of
                // it leaves room for metadata the daemon keeps about the pulls it made.
                let bytes = procfs::dir_bytes(root)?;
                if bytes > baseline + size / 2 {
                    return Err(BenchError::ContentLeft {
                        runtime: runtime.name,
                        image: bench.image.clone(),
                        root: root.clone(),
                        bytes,
                        baseline,
                    });
                }
            }
            // Start every pull without the previous pull's dirty pages being written back.
            nix::unistd::sync();
            let start = Instant::now();
            runtime.pull_image(&bench.image).await?;
            let elapsed = start.elapsed().as_secs_f64();
            let info =
                runtime
                    .image_status(&bench.image)
                    .await?
                    .ok_or_else(|| BenchError::NotPulled {
                        runtime: runtime.name,
                        image: bench.image.clone(),
                    })?;
            sizes[index] = Some(info.size);
            if iteration > 0 {
                time.samples[index].push(elapsed * 1e3);
                throughput.samples[index].push(info.size as f64 / MIB / elapsed);
            }
        }
    }
    Ok(vec![time, throughput])
}

/// RSS and PSS of each daemon process, sampled once a second over `bench.idle` while
/// the harness makes no calls.
pub async fn idle_memory(bench: &Bench) -> Result<Vec<Metric>, BenchError> {
    let pids = bench
        .runtimes
        .iter()
        .map(|runtime| {
            runtime.pid.ok_or(BenchError::MissingPid {
                scenario: "idle-memory",
                runtime: runtime.name,
            })
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let count = bench.runtimes.len();
    let mut rss = Metric::new("daemon RSS, idle", "MiB", count);
    let mut pss = Metric::new("daemon PSS, idle", "MiB", count);
    let seconds = bench.idle.as_secs();
    for _ in 0..seconds.max(1) {
        if seconds > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        for (index, pid) in pids.iter().enumerate() {
            let memory = procfs::memory(*pid)?;
            rss.samples[index].push(memory.rss_kib as f64 / 1024.0);
            pss.samples[index].push(memory.pss_kib as f64 / 1024.0);
        }
    }
    Ok(vec![rss, pss])
}

/// ListImages latency with `bench.image` and every `bench.list_images` present.
pub async fn list_images(bench: &Bench) -> Result<Vec<Metric>, BenchError> {
    let images: Vec<&String> = std::iter::once(&bench.image)
        .chain(&bench.list_images)
        .collect();
    for runtime in &bench.runtimes {
        for image in &images {
            if runtime.image_status(image).await?.is_none() {
                runtime.pull_image(image).await?;
            }
        }
        for _ in 0..LIST_WARMUP_CALLS {
            let listed = runtime.list_images().await?;
            if listed < images.len() {
                return Err(BenchError::ListedTooFew {
                    runtime: runtime.name,
                    listed,
                    present: images.len(),
                });
            }
        }
    }
    let mut latency = Metric::new(
        format!("ListImages, {} images", images.len()),
        "ms",
        bench.runtimes.len(),
    );
    for _ in 0..LIST_CALLS {
        for (index, runtime) in bench.runtimes.iter().enumerate() {
            let start = Instant::now();
            runtime.list_images().await?;
            latency.samples[index].push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(vec![latency])
}

/// Removes `image` (by id, so every name of it goes) if the runtime has it.
async fn ensure_absent(runtime: &Runtime, image: &str) -> Result<(), BenchError> {
    let Some(info) = runtime.image_status(image).await? else {
        return Ok(());
    };
    runtime.remove_image(&info.id).await?;
    if runtime.image_status(image).await?.is_some() {
        return Err(BenchError::StillPresent {
            runtime: runtime.name,
            image: image.to_string(),
        });
    }
    Ok(())
}

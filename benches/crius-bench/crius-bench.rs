//! crius-bench: measures crius and, side by side, a baseline CRI runtime (containerd),
//! driving both over gRPC with the same client code, as kubelet would.
//!
//! A scenario is one async function in [`scenarios`] that works on the [`Bench`] (the
//! connected runtimes and the options) and returns [`Metric`]s; [`Scenario`] names it on
//! the command line. Runtimes are measured interleaved (crius, containerd, crius, ...), so
//! that whatever drifts on the machine during a run hits both alike.
//!
//! Prints a Markdown table on stdout and, with `--json`, writes every sample. The whole
//! comparison, daemons included, is `benches/run.sh`; BENCHMARKS.md has the results.
//!
//! This file is the crate root but not named `main.rs`: cargo would also pick up
//! `benches/*/main.rs` as a libtest bench target of the same name.

mod error;
mod pods;
mod procfs;
mod report;
mod runtime;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use error::BenchError;
use report::{Metric, Section};
use runtime::Runtime;

#[derive(Parser)]
#[command(
    name = "crius-bench",
    about = "Benchmarks crius against a baseline CRI runtime over their CRI sockets"
)]
struct Args {
    /// CRI endpoint of crius (unix:///path/to/socket or a socket path).
    #[arg(long, value_name = "ADDRESS")]
    crius: String,
    /// Also measure crius with pods on this runtime handler (e.g. `embedded`), as a
    /// column of its own after the baseline's: the default handler against another.
    #[arg(long, value_name = "HANDLER")]
    crius_handler: Option<String>,
    /// CRI endpoint of the baseline containerd; without it only crius is measured.
    #[arg(long, value_name = "ADDRESS")]
    containerd: Option<String>,
    /// Image that the pull scenario pulls, on a registry both runtimes can reach.
    #[arg(long, value_name = "REF")]
    image: String,
    /// Image the pod scenarios run (`sleep` and `echo` must be in it, e.g. busybox).
    #[arg(long, value_name = "REF")]
    pod_image: Option<String>,
    /// Directory under which pods write their container logs.
    #[arg(long, value_name = "DIR", default_value = "/var/tmp/crius-bench-logs")]
    log_dir: String,
    /// Further images that list-images makes present before it lists (repeatable).
    #[arg(long = "list-image", value_name = "REF")]
    list_images: Vec<String>,
    /// Timed repetitions per runtime of the pull, pod-lifecycle and pods-20 scenarios,
    /// after one untimed warm-up.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Scenarios to run, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_values = ["pull", "idle-memory", "list-images", "pod-lifecycle", "pods-20", "pod-memory", "list-containers"]
    )]
    scenarios: Vec<Scenario>,
    /// Also write every sample to this JSON file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// PID of the crius daemon (for idle-memory).
    #[arg(long, value_name = "PID")]
    crius_pid: Option<u32>,
    /// PID of the containerd daemon (for idle-memory).
    #[arg(long, value_name = "PID")]
    containerd_pid: Option<u32>,
    /// crius's root dir: lets the pull scenario check that RemoveImage deleted the content.
    #[arg(long, value_name = "DIR")]
    crius_root: Option<PathBuf>,
    /// containerd's root dir: lets the pull scenario check that RemoveImage deleted the content.
    #[arg(long, value_name = "DIR")]
    containerd_root: Option<PathBuf>,
    /// Pods started per iteration of pods-20.
    #[arg(long, value_name = "N", default_value_t = 20)]
    batch: usize,
    /// Pod counts at which pod-memory samples the daemon (the first also gives per-pod costs).
    #[arg(long, value_name = "N,N", value_delimiter = ',', default_values_t = [10, 100])]
    memory_pods: Vec<usize>,
    /// Container counts at which list-containers lists.
    #[arg(long, value_name = "N,N", value_delimiter = ',', default_values_t = [100, 500])]
    list_at: Vec<usize>,
    /// How long idle-memory and pod-memory sample the daemons, once a second (0: one sample).
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    idle_secs: u64,
}

/// The scenarios, in the names the command line uses (kebab-case of the variant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Cold PullImage of `--image`, which is removed before every pull.
    Pull,
    /// RSS and PSS of each daemon process while nothing happens.
    IdleMemory,
    /// ListImages latency with `--image` and every `--list-image` present.
    ListImages,
    /// RunPodSandbox, CreateContainer + StartContainer, ExecSync, Stop + RemovePodSandbox.
    PodLifecycle,
    /// 20 pods with a container each, one after another and all at once.
    #[value(name = "pods-20")]
    Pods20,
    /// Daemon RSS with 10 and 100 pods; shim RSS/PSS per pod.
    PodMemory,
    /// ListContainers / ListPodSandbox latency at 100 and 500 containers.
    ListContainers,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Pull => "pull",
            Scenario::IdleMemory => "idle-memory",
            Scenario::ListImages => "list-images",
            Scenario::PodLifecycle => "pod-lifecycle",
            Scenario::Pods20 => "pods-20",
            Scenario::PodMemory => "pod-memory",
            Scenario::ListContainers => "list-containers",
        }
    }

    async fn run(self, bench: &Bench) -> Result<Vec<Metric>, BenchError> {
        match self {
            Scenario::Pull => scenarios::pull(bench).await,
            Scenario::IdleMemory => scenarios::idle_memory(bench).await,
            Scenario::ListImages => scenarios::list_images(bench).await,
            Scenario::PodLifecycle => pods::pod_lifecycle(bench).await,
            Scenario::Pods20 => pods::pods_20(bench).await,
            Scenario::PodMemory => pods::pod_memory(bench).await,
            Scenario::ListContainers => pods::list_containers(bench).await,
        }
    }
}

/// What every scenario works on.
pub struct Bench {
    /// crius first, then the baseline if there is one; ratios are first / second.
    pub runtimes: Vec<Runtime>,
    pub image: String,
    pub list_images: Vec<String>,
    pub pod_image: Option<String>,
    pub log_dir: String,
    pub batch: usize,
    pub memory_pods: Vec<usize>,
    pub list_at: Vec<usize>,
    pub iterations: usize,
    pub idle: Duration,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("crius-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), BenchError> {
    let mut runtimes =
        vec![Runtime::connect("crius", &args.crius, args.crius_pid, args.crius_root).await?];
    if let Some(address) = &args.containerd {
        runtimes.push(
            Runtime::connect(
                "containerd",
                address,
                args.containerd_pid,
                args.containerd_root,
            )
            .await?,
        );
    }
    if let Some(handler) = args.crius_handler {
        // Runtime names are 'static (they travel in every error); this one is made once
        // per run.
        let name: &'static str = Box::leak(format!("crius ({handler})").into_boxed_str());
        let mut runtime = Runtime::connect(name, &args.crius, args.crius_pid, None).await?;
        runtime.handler = handler;
        runtimes.push(runtime);
    }
    std::fs::create_dir_all(&args.log_dir).map_err(|source| BenchError::Io {
        path: PathBuf::from(&args.log_dir),
        source,
    })?;
    let bench = Bench {
        runtimes,
        image: args.image,
        list_images: args.list_images,
        pod_image: args.pod_image,
        log_dir: args.log_dir,
        batch: args.batch,
        memory_pods: args.memory_pods,
        list_at: args.list_at,
        iterations: args.iterations as usize,
        idle: Duration::from_secs(args.idle_secs),
    };
    for runtime in &bench.runtimes {
        println!(
            "{}: {} at {}",
            runtime.name, runtime.version, runtime.address
        );
    }
    let mut sections = Vec::new();
    for scenario in args.scenarios {
        eprintln!("crius-bench: running {}", scenario.name());
        sections.push(Section {
            scenario: scenario.name(),
            metrics: scenario.run(&bench).await?,
        });
    }
    println!();
    print!("{}", report::table(&bench.runtimes, &sections));
    if let Some(path) = &args.json {
        let json = report::json(&bench, &sections);
        std::fs::write(path, format!("{json:#}\n")).map_err(|source| BenchError::Io {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

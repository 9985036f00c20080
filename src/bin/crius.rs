//! crius: the command line client. Parses arguments and runs one verb of `crius::cli`
//! against the daemon's socket; `run` (in the foreground) and `exec` exit with the
//! container's or the command's exit code, as Docker's do.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crius::cli::{
    PrivatePort, PublishedPort, RunOptions, RunOutcome, User, Volume, DEFAULT_LOG_DIR,
};
use crius::cri::client::DEFAULT_ADDRESS;

#[derive(Parser)]
#[command(
    name = "crius",
    version,
    about = "Command line client for the crius container runtime"
)]
struct Args {
    /// CRI endpoint of criusd.
    #[arg(long, global = true, env = "CRIUS_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the client and runtime versions.
    Version,
    /// Show the runtime's status, conditions and effective configuration as JSON.
    Info,
    /// Pull an image from a registry, showing per-layer progress.
    Pull {
        image: String,
        /// Registry user name (with --password).
        #[arg(long, default_value = "")]
        username: String,
        #[arg(
            long,
            default_value = "",
            env = "CRIUS_REGISTRY_PASSWORD",
            hide_env_values = true
        )]
        password: String,
    },
    /// List images.
    Images {
        /// Only image ids.
        #[arg(short, long)]
        quiet: bool,
        /// Show digests.
        #[arg(long)]
        digests: bool,
    },
    /// Remove images (by id, name or digest), with all of their names.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show a container's, pod's or image's details as JSON (looked up in that order).
    Inspect {
        /// Container or pod (id, id prefix or name), or image.
        name: String,
    },
    /// Import images from an OCI image layout or docker save tar.
    Load {
        /// Archive to read (default: standard input).
        #[arg(short, long, value_name = "FILE")]
        input: Option<PathBuf>,
    },
    /// Export images into a tar that crius load, ctr import and docker load accept.
    Save {
        /// Archive to write (default: standard output, when redirected).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Run a command in a new container (in a pod of its own), pulling the image if needed.
    Run {
        /// Run in the background and print the container id.
        #[arg(short, long)]
        detach: bool,
        /// Container name (default: a generated one).
        #[arg(long)]
        name: Option<String>,
        /// Set an environment variable (KEY alone passes this shell's value).
        #[arg(short, long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Bind mount a host path.
        #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]", value_parser = crius::cli::parse_volume)]
        volume: Vec<Volume>,
        /// Publish a container port on the node (HOST_PORT left out: a free one).
        #[arg(
            short,
            long = "publish",
            value_name = "[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]",
            value_parser = crius::cli::parse_publish
        )]
        publish: Vec<PublishedPort>,
        /// Working directory inside the container.
        #[arg(short, long)]
        workdir: Option<String>,
        /// User: uid, uid:gid, name or name:gid.
        #[arg(short, long, value_parser = crius::cli::parse_user)]
        user: Option<User>,
        /// Memory limit: bytes or a number with k, m, g (e.g. 512m).
        #[arg(long, value_parser = crius::cli::parse_memory)]
        memory: Option<i64>,
        /// CPU limit in CPUs (e.g. 1.5).
        #[arg(long, value_name = "CPUS", value_parser = crius::cli::parse_cpus)]
        cpus: Option<i64>,
        /// Remove the container and its pod when it exits.
        #[arg(long, conflicts_with = "detach")]
        rm: bool,
        /// Directory under which each pod gets its log directory.
        #[arg(long, env = "CRIUS_LOG_DIR", default_value = DEFAULT_LOG_DIR)]
        log_dir: PathBuf,
        image: String,
        /// Command and arguments, replacing the image's CMD (everything after IMAGE).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List containers.
    Ps {
        /// All containers, not only running ones.
        #[arg(short, long)]
        all: bool,
        /// Only container ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List pod sandboxes.
    Pods {
        /// Only pod ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// List a container's published ports, or the host addresses of one of them.
    Port {
        container: String,
        /// Container port, TCP unless /udp follows.
        #[arg(value_name = "PRIVATE_PORT[/PROTO]", value_parser = crius::cli::parse_private_port)]
        port: Option<PrivatePort>,
    },
    /// Print a container's output (stdout to stdout, stderr to stderr).
    Logs {
        /// Keep printing until the container exits.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        container: String,
    },
    /// Join a running container's own stdio until it exits, and exit with its exit code.
    Attach {
        /// Leave the container's stdin alone.
        #[arg(long)]
        no_stdin: bool,
        container: String,
    },
    /// Run a command in a running container, its output streamed as it comes, and exit
    /// with its exit code.
    Exec {
        /// Pass this terminal's stdin on to the command.
        #[arg(short, long)]
        interactive: bool,
        /// Run the command with a terminal (raw mode here when stdin is one).
        #[arg(short, long)]
        tty: bool,
        container: String,
        #[arg(
            required = true,
            value_name = "COMMAND",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<String>,
    },
    /// Stop running containers: the stop signal, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        timeout: i64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Start containers; an exited one made by crius run is re-created (same name, new id).
    Start {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers, and the pods crius run made for them.
    Rm {
        /// Kill running containers first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Manage containers.
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
}

#[derive(Subcommand)]
enum ContainerCommand {
    /// Remove every exited container (and the pods crius run made for them).
    Prune,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(err),
    };
    let address = args.address;
    let finished = runtime.block_on(async {
        match args.command {
            Command::Version => crius::cli::version(&address).await.map(printed),
            Command::Info => crius::cli::info(&address)
                .await
                .map(|info| printed(format!("{info:#}\n"))),
            Command::Pull {
                image,
                username,
                password,
            } => crius::cli::pull(&address, &image, &username, &password)
                .await
                .map(printed),
            Command::Images { quiet, digests } => crius::cli::images(&address, quiet, digests)
                .await
                .map(printed),
            Command::Rmi { images } => crius::cli::rmi(&address, &images).await.map(printed),
            Command::Inspect { name } => crius::cli::inspect(&address, &name)
                .await
                .map(|details| printed(format!("{details:#}\n"))),
            Command::Load { input } => crius::cli::load(&address, input.as_deref())
                .await
                .map(printed),
            Command::Save { output, images } => {
                crius::cli::save(&address, output.as_deref(), &images)
                    .await
                    .map(printed)
            }
            Command::Run {
                detach,
                name,
                env,
                volume,
                publish,
                workdir,
                user,
                memory,
                cpus,
                rm,
                log_dir,
                image,
                command,
            } => {
                let options = RunOptions {
                    image,
                    command,
                    name,
                    env,
                    volumes: volume,
                    publish,
                    workdir,
                    user,
                    memory_bytes: memory,
                    cpu_quota: cpus,
                    detach,
                    remove: rm,
                    log_dir,
                };
                crius::cli::run(&address, options)
                    .await
                    .map(|outcome| match outcome {
                        RunOutcome::Detached(id) => printed(format!("{id}\n")),
                        RunOutcome::Exited(code) => exited(code),
                    })
            }
            Command::Ps { all, quiet } => crius::cli::ps(&address, all, quiet).await.map(printed),
            Command::Pods { quiet } => crius::cli::pods(&address, quiet).await.map(printed),
            Command::Port { container, port } => crius::cli::port(&address, &container, port)
                .await
                .map(printed),
            Command::Logs {
                follow,
                tail,
                container,
            } => crius::cli::logs(&address, &container, follow, tail)
                .await
                .map(printed),
            Command::Attach {
                no_stdin,
                container,
            } => crius::cli::attach(&address, &container, no_stdin)
                .await
                .map(exited),
            Command::Exec {
                interactive,
                tty,
                container,
                command,
            } => crius::cli::exec(&address, &container, &command, interactive, tty)
                .await
                .map(exited),
            Command::Stop {
                timeout,
                containers,
            } => crius::cli::stop(&address, &containers, timeout)
                .await
                .map(printed),
            Command::Start { containers } => {
                crius::cli::start(&address, &containers).await.map(printed)
            }
            Command::Rm { force, containers } => crius::cli::rm(&address, &containers, force)
                .await
                .map(printed),
            Command::Container {
                command: ContainerCommand::Prune,
            } => crius::cli::prune(&address).await.map(printed),
        }
    });
    // Not waiting for blocking reads: `exec -i` may leave one on stdin, which would
    // otherwise hold the exit until the user pressed enter.
    runtime.shutdown_background();
    match finished {
        Ok((text, status)) => {
            print!("{text}");
            ExitCode::from(status)
        }
        Err(err) => fail(err),
    }
}

/// A verb that printed `text` and succeeded.
fn printed(text: String) -> (String, u8) {
    (text, 0)
}

/// A verb whose exit status is a container's or a command's exit code.
fn exited(code: i32) -> (String, u8) {
    (String::new(), crius::cli::exit_status(code))
}

fn fail(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("crius: {err}");
    ExitCode::FAILURE
}

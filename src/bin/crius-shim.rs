//! crius-shim: the per-pod supervisor that criusd's shim manager starts. It serves
//! containerd's shim v2 Task API over ttrpc for one pod sandbox and outlives criusd.
//!
//! `crius-shim start --id ID --dir DIR --runtime RUNTIME` forks the shim, waits until it
//! serves, prints its socket address and exits (the shim v2 start protocol).
//! `crius-shim oci …` (hidden) is the embedded OCI runtime, which a shim runs the way it
//! would run runc.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crius::shim::daemon::{start, PodNamespaces, ShimOptions};
use crius::shim::embedded::{self, OciArgs};
use crius::shim::runc::EMBEDDED_SUBCOMMAND;

#[derive(Parser)]
#[command(
    name = "crius-shim",
    version,
    about = "Per-pod container supervisor of crius"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the shim of one pod sandbox and print its ttrpc address.
    Start {
        /// The pod sandbox id.
        #[arg(long)]
        id: String,
        /// The shim's own directory (log, runtime state, exec output).
        #[arg(long)]
        dir: PathBuf,
        /// The unix socket to serve the Task API on.
        #[arg(long)]
        socket: PathBuf,
        /// The OCI runtime containers are run with: `embedded` (built in), or a binary
        /// with runc's command line (a path, or a name looked up in PATH).
        #[arg(long, default_value = "embedded")]
        runtime: PathBuf,
        /// Join the pod's network namespace pinned at this path.
        #[arg(long, value_name = "PATH")]
        netns: Option<PathBuf>,
        /// Give the pod its own IPC namespace.
        #[arg(long)]
        new_ipc: bool,
        /// Give the pod its own PID namespace, shared by its containers.
        #[arg(long)]
        new_pid: bool,
        /// Give the pod its own UTS namespace, with this hostname.
        #[arg(long, value_name = "HOSTNAME")]
        hostname: Option<String>,
    },
    /// The embedded OCI runtime, with runc's command line (run by the shim itself).
    #[command(name = EMBEDDED_SUBCOMMAND, hide = true)]
    Oci(OciArgs),
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Oci(args) => embedded::main(args),
        Command::Start {
            id,
            dir,
            socket,
            runtime,
            netns,
            new_ipc,
            new_pid,
            hostname,
        } => {
            let namespaces = PodNamespaces {
                network: netns,
                ipc: new_ipc,
                uts: hostname.is_some(),
                pid: new_pid,
            };
            match start(ShimOptions {
                id,
                dir,
                socket,
                runtime: runtime.into(),
                namespaces,
                hostname,
            }) {
                Ok(address) => {
                    println!("{address}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("crius-shim: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

//! crius-shim: the per-pod supervisor that criusd's shim manager starts. It serves
//! containerd's shim v2 Task API over ttrpc for one pod sandbox and outlives criusd.
//!
//! `crius-shim start --id ID --dir DIR --runtime RUNC` forks the shim, waits until it
//! serves, prints its socket address and exits (the shim v2 start protocol).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crius::shim::daemon::{start, PodNamespaces, ShimOptions};

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
        /// The OCI runtime binary containers are run with.
        #[arg(long, default_value = "runc")]
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
}

fn main() -> ExitCode {
    let Command::Start {
        id,
        dir,
        socket,
        runtime,
        netns,
        new_ipc,
        new_pid,
        hostname,
    } = Args::parse().command;
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
        runtime,
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

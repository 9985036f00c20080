//! crius: the command line client. Parses arguments and runs one verb of `crius::cli`
//! against the daemon's socket.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    let printed = runtime.block_on(async {
        match args.command {
            Command::Version => crius::cli::version(&args.address).await,
            Command::Info => crius::cli::info(&args.address)
                .await
                .map(|info| format!("{info:#}\n")),
        }
    });
    match printed {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}

fn fail(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("crius: {err}");
    ExitCode::FAILURE
}

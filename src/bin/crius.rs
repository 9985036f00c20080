//! crius: the command line client. Parses arguments and runs one verb of `crius::cli`
//! against the daemon's socket.

use std::path::PathBuf;
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
    /// Show an image's details as JSON.
    Inspect { image: String },
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
    let printed = runtime.block_on(async {
        match args.command {
            Command::Version => crius::cli::version(&address).await,
            Command::Info => crius::cli::info(&address)
                .await
                .map(|info| format!("{info:#}\n")),
            Command::Pull {
                image,
                username,
                password,
            } => crius::cli::pull(&address, &image, &username, &password).await,
            Command::Images { quiet, digests } => {
                crius::cli::images(&address, quiet, digests).await
            }
            Command::Rmi { images } => crius::cli::rmi(&address, &images).await,
            Command::Inspect { image } => crius::cli::inspect(&address, &image)
                .await
                .map(|details| format!("{details:#}\n")),
            Command::Load { input } => crius::cli::load(&address, input.as_deref()).await,
            Command::Save { output, images } => {
                crius::cli::save(&address, output.as_deref(), &images).await
            }
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

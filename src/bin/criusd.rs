//! criusd: the crius daemon. Parses arguments and the config file, then hands over to
//! `crius::daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crius::config::{Config, DEFAULT_CONFIG_PATH, DEFAULT_CONFIG_TOML};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(
    name = "criusd",
    version,
    about = "crius daemon: serves the Kubernetes CRI (runtime.v1) on a unix socket"
)]
struct Args {
    /// Configuration file (TOML); every key is optional.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Work with the configuration file.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print the full default configuration, with comments.
    Default,
    /// Check the configuration file and print the effective configuration.
    Check,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The default path may be absent (defaults apply); a path the operator typed may not.
    let explicit = args.config.as_os_str() != DEFAULT_CONFIG_PATH;
    let config = match Config::load(&args.config, explicit) {
        Ok(config) => config,
        Err(err) => return fail(err),
    };
    match args.command {
        Some(Command::Config {
            action: ConfigAction::Default,
        }) => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Some(Command::Config {
            action: ConfigAction::Check,
        }) => match toml::to_string(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(err) => fail(err),
        },
        None => run(config),
    }
}

fn run(config: Config) -> ExitCode {
    crius::logging::init(config.log_level, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(err),
    };
    let code = runtime.block_on(async {
        // Register before serving so a signal that arrives during start-up is not lost.
        let (mut terminate, mut interrupt) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(terminate), Ok(interrupt)) => (terminate, interrupt),
            (Err(err), _) | (_, Err(err)) => return fail(err),
        };
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = interrupt.recv() => tracing::info!("SIGINT: shutting down"),
            }
        };
        match crius::daemon::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(err),
        }
    });
    // Blocking threads may sit in a shim's Wait for minutes; they hold nothing that must
    // be flushed (records are written before a request answers), so do not wait for them.
    runtime.shutdown_background();
    code
}

fn fail(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("criusd: {err}");
    ExitCode::FAILURE
}

//! crius-shim: the per-pod supervisor that criusd's shim manager starts. It serves
//! containerd's shim v2 Task API over ttrpc for one pod sandbox and outlives criusd.
//!
//! Its command line is the one containerd gives every shim v2 binary (see
//! `crius::shim::command_line`): `crius-shim -namespace NS -address ADDR -publish-binary
//! BIN -id ID [pod options] start` forks the shim, waits until it serves, prints its
//! socket address and exits (the shim v2 start protocol); `… -id ID delete` cleans up a
//! container of a dead shim.

use std::io::Write;
use std::process::ExitCode;

use crius::shim::command_line::{ShimAction, ShimArgs, USAGE};
use crius::shim::daemon::{self, default_socket, group_of, PodNamespaces, ShimOptions};
use crius::shim::ShimError;

/// The environment variable containerd names its ttrpc address in, where shims publish
/// events.
const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args
        .iter()
        .any(|arg| matches!(arg.as_str(), "-h" | "-help" | "--help"))
    {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let args = match ShimArgs::parse(args) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("crius-shim: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if args.version {
        println!("crius-shim {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("crius-shim: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: ShimArgs) -> Result<(), ShimError> {
    // The working directory is the shim's, as containerd runs every shim.
    let dir = std::env::current_dir().map_err(|source| ShimError::Io {
        what: "find the working directory",
        source,
    })?;
    let socket = args.socket.clone().unwrap_or_else(|| {
        default_socket(&args.address, &args.namespace, &group_of(&dir, &args.id))
    });
    match args.action {
        Some(ShimAction::Delete) => {
            let response = daemon::delete(&dir, &args.id, &args.runtime.into(), &socket)?;
            std::io::stdout()
                .write_all(&response)
                .map_err(|source| ShimError::Io {
                    what: "write the delete response",
                    source,
                })
        }
        Some(ShimAction::Start) | None => {
            let events = std::env::var(TTRPC_ADDRESS_ENV)
                .ok()
                .filter(|address| !address.is_empty())
                .or_else(|| (!args.address.is_empty()).then(|| args.address.clone()));
            let address = daemon::start(ShimOptions {
                id: args.id,
                dir,
                namespace: args.namespace,
                events,
                socket,
                runtime: args.runtime.into(),
                namespaces: PodNamespaces {
                    network: args.netns,
                    ipc: args.new_ipc,
                    uts: args.hostname.is_some(),
                    pid: args.new_pid,
                },
                hostname: args.hostname,
            })?;
            // A bare address: Task API v2 to any containerd; crius-shim serves v3 too.
            print!("{address}");
            Ok(())
        }
    }
}

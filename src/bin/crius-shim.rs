//! crius-shim: the per-pod supervisor process that criusd's shim manager starts.
//!
//! It will serve containerd's shim v2 Task API over ttrpc for one pod sandbox (see the
//! pods-and-containers work). Until then the binary exists so that packaging, the systemd
//! unit and the layout are final, and it refuses to run rather than pretend.

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("-V") => {
            println!("crius-shim {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "crius-shim: started by criusd's shim manager, not by hand; \
                 this build does not run containers yet"
            );
            ExitCode::FAILURE
        }
    }
}

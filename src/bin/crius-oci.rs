//! crius-oci: the OCI runtime of crius's `embedded` runtime handler (youki's
//! libcontainer behind runc's command line, see `crius::shim::embedded`). crius-shim
//! runs it beside itself the way it runs runc, so a node needs no runtime binary
//! besides crius's own; it is a binary of its own so that the shims, one per pod, stay
//! small.

use std::process::ExitCode;

use clap::Parser;
use crius::shim::embedded::{self, OciArgs};

fn main() -> ExitCode {
    embedded::main(OciArgs::parse())
}

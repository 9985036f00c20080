#!/usr/bin/env bash
# Builds crius (release) and runs criusd with the embedded defaults, installing the build
# dependencies first when they are missing. Arguments go to criusd (e.g. --config FILE).
# All of crius's binaries are built: criusd starts crius-shim from beside itself, and
# the shim runs crius-oci (the default OCI runtime) from beside itself.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-build-deps.sh
cargo build --release --bin criusd --bin crius-shim --bin crius-oci --bin crius
exec target/release/criusd "$@"

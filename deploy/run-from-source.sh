#!/usr/bin/env bash
# Builds crius (release) and runs criusd with the embedded defaults, installing the build
# dependencies first when they are missing. Arguments go to criusd (e.g. --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-build-deps.sh
exec cargo run --release --bin criusd -- "$@"

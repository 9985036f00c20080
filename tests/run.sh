#!/usr/bin/env bash
# Runs the whole crius test suite on a Debian machine, as root.
#
# Installs the Debian packages the build and the tests need when they are missing
# (libseccomp-dev, which the embedded OCI runtime links to install seccomp filters; the
# real registry, skopeo to push test images into it, Debian's dynamic busybox for the test
# images, htpasswd and openssl for registries that require Basic or token authentication,
# runc for the tests of the runc runtime handler, iproute2 for the network tests' checks,
# the CNI reference plugins and iptables for the CNI mode tests' bridge and portmap, nft
# for the built-in bridge's outbound masquerade), then
# runs every unit and integration test: with cargo-nextest when it is installed, else with
# cargo test. Extra arguments go to the test runner (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: the tests create namespaces, mounts and cgroups: run as root" >&2
    exit 1
fi
if ! command -v cargo >/dev/null; then
    echo "tests/run.sh: cargo not found: install a Rust toolchain (rustup, Rust >= 1.87)" >&2
    exit 1
fi

# Debian package → a file it installs, to tell whether it is present.
declare -A needed=(
    [libseccomp-dev]=/usr/include/seccomp.h
    [docker-registry]=/usr/bin/docker-registry
    [skopeo]=/usr/bin/skopeo
    [busybox]=/bin/busybox
    [apache2-utils]=/usr/bin/htpasswd
    [openssl]=/usr/bin/openssl
    [runc]=/usr/sbin/runc
    [iproute2]=/usr/sbin/ip
    [containernetworking-plugins]=/usr/lib/cni/bridge
    [iptables]=/usr/sbin/iptables
    [nftables]=/usr/sbin/nft
)
missing=()
for package in "${!needed[@]}"; do
    [ -e "${needed[$package]}" ] || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "tests/run.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's busybox-static would replace the dynamic one and hide real exec behaviour.
# (grep reads all of ldd's output: with -q it could exit early, and pipefail would
# count the SIGPIPE of ldd as a failure.)
if ! ldd /bin/busybox 2>/dev/null | grep 'libc\.so' >/dev/null; then
    echo "tests/run.sh: /bin/busybox is not Debian's dynamic busybox (busybox-static installed?)" >&2
    exit 1
fi

if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --locked --no-fail-fast "$@"
else
    exec cargo test --locked --no-fail-fast "$@"
fi

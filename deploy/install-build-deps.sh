#!/usr/bin/env bash
# Installs the Debian packages that building crius needs, when they are missing:
# libseccomp-dev (the embedded OCI runtime links libseccomp to install containers'
# seccomp filters; the library itself, libseccomp2, is on every Debian system).
set -euo pipefail
if [ -e /usr/include/seccomp.h ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install-build-deps.sh: libseccomp-dev is missing; run as root to install it" >&2
    exit 1
fi
echo "install-build-deps.sh: installing libseccomp-dev"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends libseccomp-dev >/dev/null

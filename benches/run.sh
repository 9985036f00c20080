#!/usr/bin/env bash
# Benchmarks crius against Debian's containerd, side by side, in one run. As root.
#
# Installs what is missing (Debian packages), builds criusd and crius-bench in release,
# then brings up, all inside one temp dir:
#   - Debian's docker-registry on a free 127.0.0.1 port, holding the test suite's
#     deterministic images (multilayer: 3 layers, one of 50 MiB; busybox) and a pause
#     image built here from benches/pause.c;
#   - criusd with its own socket, root and state;
#   - containerd with its own socket, root, state and CNI dirs (never the system's
#     /run/containerd or /var/lib/containerd), the CRI plugin pulling from the registry
#     over plain HTTP;
# runs crius-bench against both, and stops everything it started, by PID: no process,
# mount, interface or file of the run is left behind.
#
# Usage: benches/run.sh [crius-bench options, e.g. --iterations 20 --scenarios pull]
# Env:   BENCH_JSON  report file (default target/crius-bench.json)
#        BENCH_TMP   parent of the temp dir (default /var/tmp; overlayfs needs a real
#                    filesystem such as ext4 or xfs there, not tmpfs)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [ "$(id -u)" != 0 ]; then
    echo "benches/run.sh: the runtimes mount overlays and manage namespaces: run as root" >&2
    exit 1
fi

cgroup_version() {
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
        echo v2
    elif [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
        echo "v1 (hybrid: v2 at /sys/fs/cgroup/unified)"
    else
        echo v1
    fi
}
echo "== machine"
echo "cpu:     $(nproc) cores, $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "memory:  $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "kernel:  $(uname -r)"
echo "cgroup:  $(cgroup_version)"
echo "os:      $(. /etc/os-release && echo "$PRETTY_NAME")"

# Debian package -> a file it installs, to tell whether it is present.
declare -A needed=(
    [containerd]=/usr/bin/containerd
    [runc]=/usr/sbin/runc
    [containernetworking-plugins]=/usr/lib/cni/bridge
    [docker-registry]=/usr/bin/docker-registry
    [skopeo]=/usr/bin/skopeo
    [busybox]=/bin/busybox
    [gcc]=/usr/bin/gcc
    [libc6-dev]=/usr/include/stdio.h
    [iproute2]=/usr/sbin/ip
    [curl]=/usr/bin/curl
)
missing=()
for package in "${!needed[@]}"; do
    [ -e "${needed[$package]}" ] || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "containerd: $(containerd --version)"
echo "runc:    $(runc --version | head -1)"
echo "crius:   $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"

BRIDGE=cbench0       # containerd's CNI bridge, 10.88.0.0/16
CRIUS_BRIDGE=criusb0 # crius's built-in bridge, on a subnet of its own beside containerd's
for bridge in "$BRIDGE" "$CRIUS_BRIDGE"; do
    if ip link show "$bridge" >/dev/null 2>&1; then
        echo "benches/run.sh: interface $bridge exists; is another benchmark running?" >&2
        exit 1
    fi
done

echo "== building (release)"
cargo build --release --locked --bin criusd --bin crius-shim --bin crius-oci --bin crius-bench
BIN=$REPO/target/release

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/crius-bench.XXXXXX")
chmod 0755 "$WORK"
STARTED=() # PIDs of the daemons this script started, in start order

# Processes whose command line names the temp dir: what the daemons started (shims).
pids_mentioning_work() {
    local dir
    for dir in /proc/[0-9]*; do
        [ "${dir#/proc/}" = $$ ] && continue
        tr '\0' ' ' <"$dir/cmdline" 2>/dev/null | grep -qF "$WORK" && echo "${dir#/proc/}"
    done
    return 0
}
mounts_under_work() {
    awk -v dir="$WORK" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo
}
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local status=$? i pid mount
    set +e
    if [ "$status" != 0 ]; then
        for log in "$WORK"/*/*.log; do
            [ -f "$log" ] && { echo "--- last lines of $log"; tail -20 "$log"; }
        done
    fi
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do stop_pid "${STARTED[i]}"; done
    for pid in $(pids_mentioning_work); do kill -KILL "$pid" 2>/dev/null; done
    # Deepest first, so that no mount hides another.
    for mount in $(mounts_under_work | sort -r); do umount "$mount" || umount -l "$mount"; done
    # They did not exist when the run started (checked above): the runtimes made them.
    for bridge in "$BRIDGE" "$CRIUS_BRIDGE"; do
        ip link show "$bridge" >/dev/null 2>&1 && ip link delete "$bridge"
    done
    rm -rf "$WORK"
    if [ -n "$(pids_mentioning_work)$(mounts_under_work)" ] || [ -e "$WORK" ]; then
        echo "benches/run.sh: could not clean up everything under $WORK" >&2
        status=1
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until $2 exists as a socket, as long as process $1 lives.
wait_socket() {
    local pid=$1 socket=$2 i
    for i in $(seq 100); do
        [ -S "$socket" ] && return 0
        kill -0 "$pid" 2>/dev/null || { echo "process $pid exited before serving $socket" >&2; return 1; }
        sleep 0.1
    done
    echo "nothing serves $socket after 10 s" >&2
    return 1
}

echo "== registry"
mkdir -p "$WORK/registry/storage" "$WORK/skopeo-tmp"
free_port() {
    local port
    while :; do
        port=$((20000 + RANDOM % 40000))
        [ -z "$(ss -Hltn "sport = :$port")" ] && { echo "$port"; return; }
    done
}
PORT=$(free_port)
REGISTRY=127.0.0.1:$PORT
cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry/storage
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
# REGISTRY_* variables would override the config (e.g. a proxy to a remote registry).
(
    unset "${!REGISTRY_@}"
    exec docker-registry serve "$WORK/registry/config.yml"
) >"$WORK/registry/registry.log" 2>&1 &
STARTED+=($!)
for i in $(seq 100); do
    curl -fsS -o /dev/null "http://$REGISTRY/v2/" 2>/dev/null && break
    kill -0 "${STARTED[-1]}" 2>/dev/null || { echo "docker-registry exited" >&2; exit 1; }
    sleep 0.1
done
curl -fsS -o /dev/null "http://$REGISTRY/v2/"
push() { # LAYOUT TAG REPO:TAG
    skopeo --insecure-policy --tmpdir "$WORK/skopeo-tmp" copy --quiet --all --preserve-digests \
        --dest-tls-verify=false "oci:$1:$2" "docker://$REGISTRY/$3"
    echo "pushed $REGISTRY/$3"
}

# The test suite's image builder: deterministic layouts, cached under target/tmp.
CRIUS_BENCH_LAYOUTS=$WORK/layouts.txt cargo test --locked --quiet --test bench_smoke -- \
    --ignored --exact prepare_bench_images >/dev/null
while read -r name layout tag; do
    push "$layout" "$tag" "$name:$tag"
done <"$WORK/layouts.txt"

# The sandbox image: one layer holding a static /pause, as an OCI layout.
build_pause_image() {
    local dir=$WORK/pause layout=$WORK/pause/layout arch diff_id layer config manifest
    mkdir -p "$dir/rootfs" "$layout/blobs/sha256"
    gcc -static -O2 -s -o "$dir/rootfs/pause" "$REPO/benches/pause.c"
    tar --format=gnu --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$dir/rootfs" \
        -cf "$dir/layer.tar" pause
    diff_id=sha256:$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
    gzip -n "$dir/layer.tar"
    blob() { # FILE -> "sha256:HEX SIZE", FILE moved into the layout
        local hex
        hex=$(sha256sum "$1" | cut -d' ' -f1)
        echo "sha256:$hex $(stat -c %s "$1")"
        mv "$1" "$layout/blobs/sha256/$hex"
    }
    layer=($(blob "$dir/layer.tar.gz"))
    arch=$(dpkg --print-architecture)
    printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["%s"]}}' \
        "$arch" "$diff_id" >"$dir/config.json"
    config=($(blob "$dir/config.json"))
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
        "${config[0]}" "${config[1]}" "${layer[0]}" "${layer[1]}" >"$dir/manifest.json"
    manifest=($(blob "$dir/manifest.json"))
    echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"bench"}}]}' \
        "${manifest[0]}" "${manifest[1]}" >"$layout/index.json"
    push "$layout" bench pause:bench
}
build_pause_image
PAUSE_IMAGE=$REGISTRY/pause:bench

echo "== criusd"
mkdir -p "$WORK/crius"
cat >"$WORK/crius/crius.toml" <<EOF
listen = "$WORK/crius/crius.sock"
root = "$WORK/crius/root"
state = "$WORK/crius/state"

[network]
bridge = "$CRIUS_BRIDGE"
subnet = "10.89.0.0/16"

[registries."$REGISTRY"]
insecure = true
EOF
"$BIN/criusd" --config "$WORK/crius/crius.toml" >"$WORK/crius/criusd.log" 2>&1 &
CRIUS_PID=$!
STARTED+=("$CRIUS_PID")
wait_socket "$CRIUS_PID" "$WORK/crius/crius.sock"
echo "criusd pid $CRIUS_PID"

echo "== containerd"
C=$WORK/containerd
mkdir -p "$C/cni/net.d" "$C/cni/bin" "$C/cni/ipam"
# The bin dir holds links to Debian's plugins, so that nothing else is on containerd's path.
ln -s /usr/lib/cni/* "$C/cni/bin/"
cat >"$C/cni/net.d/10-crius-bench.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "crius-bench",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "10.88.0.0/16" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$C/cni/ipam"
      }
    }
  ]
}
EOF
cat >"$C/config.toml" <<EOF
version = 2
root = "$C/root"
state = "$C/state"

[grpc]
  address = "$C/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$C/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without CAP_SYS_RESOURCE (as here) containerd may only raise oom_score_adj.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  # runc's state beside containerd's, not in the shared default /run/containerd/runc.
  Root = "$C/runc"

[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "$C/cni/bin"
  conf_dir = "$C/cni/net.d"

[plugins."io.containerd.grpc.v1.cri".registry.mirrors."$REGISTRY"]
  endpoint = ["http://$REGISTRY"]
EOF
containerd --config "$C/config.toml" >"$C/containerd.log" 2>&1 &
CONTAINERD_PID=$!
STARTED+=("$CONTAINERD_PID")
wait_socket "$CONTAINERD_PID" "$C/containerd.sock"
echo "containerd pid $CONTAINERD_PID"

# Other work on the machine slows both runtimes (interleaving keeps the ratios fair), but
# it moves the absolute numbers: say how busy the machine was.
echo "== crius-bench (load average $(cut -d' ' -f1-3 /proc/loadavg))"
JSON=${BENCH_JSON:-$REPO/target/crius-bench.json}
"$BIN/crius-bench" \
    --crius "unix://$WORK/crius/crius.sock" --crius-pid "$CRIUS_PID" --crius-root "$WORK/crius/root" \
    --containerd "unix://$C/containerd.sock" --containerd-pid "$CONTAINERD_PID" \
    --containerd-root "$C/root" \
    --image "$REGISTRY/multilayer:latest" \
    --list-image "$REGISTRY/busybox:latest" --list-image "$PAUSE_IMAGE" \
    --pod-image "$REGISTRY/busybox:latest" --log-dir "$WORK/logs" \
    --json "$JSON" "$@"
echo "report: $JSON"

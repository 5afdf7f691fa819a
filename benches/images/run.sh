#!/usr/bin/env bash
# Image benchmark: `berth daemon` vs Debian's dockerd 20.10 (+ its containerd), driven by the
# docker CLI. See README.md beside this file.  Progress goes to stderr, the table to stdout.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REGLIB="$ROOT/benches/registry/benchlib.py"
LIB="$HERE/imglib.py"

BERTH=${BERTH:-$ROOT/target/release/berth}
FIXTURE=${FIXTURE:-$ROOT/target/release/berth-fixture}
DOCKERD=${DOCKERD:-$(command -v dockerd || echo /usr/sbin/dockerd)}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_LAYERS=${BENCH_LAYERS:-6}
BENCH_LAYER_MB=${BENCH_LAYER_MB:-55}
BENCH_IMPORT_MB=${BENCH_IMPORT_MB:-500}
BENCH_SETTLE=${BENCH_SETTLE:-5}
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-60}
BENCH_OP_TIMEOUT=${BENCH_OP_TIMEOUT:-600}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_STRICT=${BENCH_STRICT:-0}
REPO=bench/img
TAG=latest

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "print('%.3f' % ($2 - $1))"; }

for tool in python3 skopeo docker curl tar; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/berth-imgbench.XXXXXX)
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
PIDS=()

kill_tree_under() {  # SIGKILL leftovers whose command line names DIR/ (dockerd's containerd)
    local needle="$1/" p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = $$ ] && continue
        { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$needle" && kill -KILL "$p" 2>/dev/null
    done
}

stop_pid() {
    local pid=$1 i p keep=()
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

unmount_under() {
    local m
    awk '{print $5}' /proc/self/mountinfo | grep -F "$1/" | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
}

ETC_CREATED=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    kill_tree_under "$WORK"
    unmount_under "$WORK"
    for p in "${ETC_CREATED[@]}"; do rm -f "$p" 2>/dev/null || rmdir "$p" 2>/dev/null; done
    if [ "$BENCH_KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

result() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$RESULTS"; }

# ---------------------------------------------------------------- daemons
# start_SYS sets DPID and DHOST; stores live under $WORK/SYS-N.
DOCKER_CONFIG_DIR="$WORK/cli-config"
mkdir -p "$DOCKER_CONFIG_DIR"
dock() {  # dock HOST args...
    local host=$1; shift
    env -u DOCKER_CONTEXT -u DOCKER_API_VERSION -u DOCKER_TLS_VERIFY DOCKER_CONFIG="$DOCKER_CONFIG_DIR" \
        timeout "$BENCH_OP_TIMEOUT" docker -H "$host" "$@"
}

wait_ready() {  # wait_ready NAME PID HOST LOG
    local i
    for i in $(seq $((BENCH_START_TIMEOUT * 4))); do
        dock "$3" version --format '{{.Server.Version}}' >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.25
    done
    log "$1 failed to start: $(tail -c 800 "$4" | tr '\n' ' ')"
    stop_pid "$2"
    return 1
}

GEN=0
start_berth() {
    GEN=$((GEN + 1))
    local d="$WORK/berth-$GEN"
    mkdir -p "$d"
    DHOST="unix://$d/b.sock"; DDATA="$d/data"
    RUST_LOG=${BERTH_RUST_LOG:-info} NO_COLOR=1 "$BERTH" daemon -H "$DHOST" --data-root "$DDATA" \
        --exec-root "$d/exec" --pidfile "$d/b.pid" >"$d/log" 2>&1 &
    DPID=$!; PIDS+=("$DPID")
    wait_ready berth "$DPID" "$DHOST" "$d/log"
}

start_dockerd() {
    GEN=$((GEN + 1))
    local d="$WORK/dockerd-$GEN"
    mkdir -p "$d"
    echo '{}' >"$d/daemon.json"
    DHOST="unix://$d/d.sock"; DDATA="$d/data"
    # dockerd 20.10 writes its trust key to /etc/docker/key.json whatever it is told.
    [ -e /etc/docker ] || ETC_CREATED=(/etc/docker "${ETC_CREATED[@]}")
    [ -e /etc/docker/key.json ] || ETC_CREATED=(/etc/docker/key.json "${ETC_CREATED[@]}")
    "$DOCKERD" --config-file "$d/daemon.json" -H "$DHOST" --data-root "$DDATA" --exec-root "$d/exec" \
        --pidfile "$d/d.pid" --bridge=none --iptables=false --ip6tables=false >"$d/log" 2>&1 &
    DPID=$!; PIDS+=("$DPID")
    wait_ready dockerd "$DPID" "$DHOST" "$d/log"
}

# layers_left SYS: entries left in the layer store (0 = empty)
layers_left() {
    local n=0
    if [ "$1" = dockerd ]; then
        n=$(find "$DDATA/overlay2" "$DDATA/image/overlay2/layerdb/sha256" -mindepth 1 -maxdepth 1 \
            ! -name l 2>/dev/null | wc -l)
    else
        n=$(find "$DDATA/snapshots" "$DDATA/blobs/sha256" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    fi
    echo "$n"
}

# ---------------------------------------------------------------- inputs
log "work dir $WORK; $BENCH_ROUNDS round(s); load $(cut -d' ' -f1 /proc/loadavg)"
result meta cpus "$(nproc)"
result meta loadavg_start "$(cut -d' ' -f1 /proc/loadavg)"
if [ ! -x "$BERTH" ]; then
    log "building berth (cargo build --release --bin berth)"
    (cd "$ROOT" && cargo build --release --bin berth) >"$WORK/cargo.log" 2>&1 || { log "build failed"; exit 2; }
fi
IMG="$WORK/image"
log "image: $BENCH_LAYERS x $BENCH_LAYER_MB MiB random layers"
if [ -x "$FIXTURE" ]; then
    "$FIXTURE" oci-layout --out "$IMG" --tag "$TAG" --random-layers "$BENCH_LAYERS" --layer-mb "$BENCH_LAYER_MB"
else
    (cd "$ROOT" && cargo run --release -q -p berth-testkit --bin berth-fixture -- oci-layout --out "$IMG" \
        --tag "$TAG" --random-layers "$BENCH_LAYERS" --layer-mb "$BENCH_LAYER_MB")
fi >"$WORK/fixture.log" 2>&1 || { log "fixture failed: $(tail -3 "$WORK/fixture.log")"; exit 2; }
python3 "$REGLIB" layout-info "$IMG" "$TAG" >"$WORK/image.env" || exit 2
# shellcheck disable=SC1091
. "$WORK/image.env"
WANT_ID=$(python3 "$LIB" config-digest "$IMG" "$TAG") || exit 2
result meta image "$LAYER_COUNT layers, $((LAYER_BYTES / 1000000)) MB ($LAYER_TYPES)"

log "root filesystem tarball: $BENCH_IMPORT_MB MB of random files"
RFS="$WORK/rootfs"
mkdir -p "$RFS"/{bin,etc,usr/lib,var/lib/data}
echo "bench:x:0:0::/:/bin/sh" >"$RFS/etc/passwd"
for i in $(seq $((BENCH_IMPORT_MB / 10))); do
    head -c $((10 * 1000 * 1000)) /dev/urandom >"$RFS/usr/lib/blob$i.so"
done
tar -C "$RFS" -cf "$WORK/rootfs.tar" . && rm -rf "$RFS"
result meta import_tar "$(($(stat -c %s "$WORK/rootfs.tar") / 1000000)) MB, $((BENCH_IMPORT_MB / 10)) random files"

# The registry: berth registry serve on 127.0.0.1, plain HTTP.
RPORT=$(python3 "$REGLIB" freeport) || exit 2
mkdir -p "$WORK/registry"
RUST_LOG=warn "$BERTH" registry serve --addr "127.0.0.1:$RPORT" --root "$WORK/registry" \
    >"$WORK/registry.log" 2>&1 &
RPID=$!; PIDS+=("$RPID")
for i in $(seq $((BENCH_START_TIMEOUT * 10))); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$RPORT/v2/")" = 200 ] && break
    kill -0 "$RPID" 2>/dev/null || { log "registry died: $(tail -c 600 "$WORK/registry.log")"; exit 2; }
    sleep 0.1
done
REF="127.0.0.1:$RPORT/$REPO:$TAG"
skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false "oci:$IMG:$TAG" "docker://$REF" \
    >"$WORK/push.log" 2>&1 || { log "push failed: $(tail -c 600 "$WORK/push.log")"; exit 2; }
rm -rf "$IMG"
log "registry at 127.0.0.1:$RPORT holds $REF ($LAYER_COUNT layers, $((LAYER_BYTES / 1000000)) MB)"

# ---------------------------------------------------------------- workload
# bench SYS: pulls and imports, BENCH_ROUNDS each, into an empty store each time; then idle RSS.
bench() {
    local sys=$1 r t0 t1 id left
    if ! "start_$sys"; then
        for m in pull_s import_s idle_rss_mb; do result "$m" "$sys" "" "failed to start"; done
        return 1
    fi
    log "$sys: pid $DPID at $DHOST"
    for r in $(seq "$BENCH_ROUNDS"); do
        left=$(layers_left "$sys")
        if [ "$left" != 0 ]; then
            log "$sys: $left layer entries left after rmi; restarting on a fresh data root"
            stop_pid "$DPID"; kill_tree_under "$(dirname "$DDATA")"; unmount_under "$(dirname "$DDATA")"
            "start_$sys" || { result pull_s "$sys" "" "restart failed"; return 1; }
        fi
        # Every round starts with no dirty pages from an earlier one: dockerd leaves its
        # writes to the kernel, Berth syncs its own; neither pays for the other's write-back.
        sync
        t0=$(now)
        if ! dock "$DHOST" pull -q "$REF" >"$WORK/$sys-pull-$r.log" 2>&1; then
            log "$sys pull failed: $(tail -c 600 "$WORK/$sys-pull-$r.log" | tr '\n' ' ')"
            result pull_s "$sys" "" "pull failed: $(tail -1 "$WORK/$sys-pull-$r.log" | cut -c1-120)"
            return 1
        fi
        t1=$(now)
        id=$(dock "$DHOST" image inspect --format '{{.Id}}' "$REF" 2>&1)
        if [ "$id" != "$WANT_ID" ]; then
            result pull_s "$sys" "" "wrong image ID: $id"; return 1
        fi
        result pull_s "$sys" "$(elapsed "$t0" "$t1")"
        log "$sys pull round $r: $(elapsed "$t0" "$t1") s"
        if [ "$r" -lt "$BENCH_ROUNDS" ]; then
            dock "$DHOST" rmi "$REF" >/dev/null 2>&1 || log "$sys: rmi failed"
        fi
    done
    # Idle memory after the pull workload (the image still present).
    sleep "$BENCH_SETTLE"
    local rss names
    IFS=$'\t' read -r rss names < <(python3 "$LIB" rss "$DPID")
    result idle_rss_mb "$sys" "$(python3 -c "print('%.1f' % ($rss / 1024))")"
    log "$sys idle RSS: $((rss / 1024)) MiB over [$names]"
    result meta "${sys}_processes" "$names"
    dock "$DHOST" rmi "$REF" >/dev/null 2>&1
    for r in $(seq "$BENCH_ROUNDS"); do
        sync
        t0=$(now)
        if ! id=$(dock "$DHOST" import "$WORK/rootfs.tar" bench/imported:"$r" 2>"$WORK/$sys-import-$r.log"); then
            log "$sys import failed: $(tail -c 600 "$WORK/$sys-import-$r.log" | tr '\n' ' ')"
            result import_s "$sys" "" "import failed: $(tail -1 "$WORK/$sys-import-$r.log" | cut -c1-120)"
            return 1
        fi
        t1=$(now)
        if ! dock "$DHOST" image inspect bench/imported:"$r" >/dev/null 2>&1; then
            result import_s "$sys" "" "imported image missing"; return 1
        fi
        result import_s "$sys" "$(elapsed "$t0" "$t1")"
        log "$sys import round $r: $(elapsed "$t0" "$t1") s ($id)"
        dock "$DHOST" rmi bench/imported:"$r" >/dev/null 2>&1 || log "$sys: rmi of the import failed"
    done
    stop_pid "$DPID"
    kill_tree_under "$(dirname "$DDATA")"
    unmount_under "$(dirname "$DDATA")"
    rm -rf "$(dirname "$DDATA")"
}

if [ ! -x "$DOCKERD" ]; then
    for m in pull_s import_s idle_rss_mb; do result "$m" dockerd "" "no dockerd binary"; done
else
    bench dockerd
fi
bench berth

result meta loadavg_end "$(cut -d' ' -f1 /proc/loadavg)"
echo
echo "Image benchmark: $REF, $LAYER_COUNT layers, $((LAYER_BYTES / 1000000)) MB; import of a $BENCH_IMPORT_MB MB tarball; medians of $BENCH_ROUNDS; $(nproc) CPUs"
python3 "$LIB" report "$RESULTS"
rc=$?
[ "$BENCH_STRICT" = 1 ] && exit "$rc"
exit 0

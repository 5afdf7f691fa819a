#!/usr/bin/env bash
# Container start benchmark: `docker run --rm --network none IMG true`, sequentially, through
# `berth daemon` and through Debian's dockerd 20.10 (+ containerd + runc), both driven by the
# same docker CLI, in one run. Each daemon gets a temp root; the image is Berth's busybox-static
# fixture, loaded with `docker load`. Progress goes to stderr, the table to stdout.
#
#   BENCH_RUNS=50 benches/containers/run.sh
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BERTH=${BERTH:-$ROOT/target/release/berth}
FIXTURE=${FIXTURE:-$ROOT/target/release/berth-fixture}
DOCKERD=${DOCKERD:-$(command -v dockerd || echo /usr/sbin/dockerd)}
BENCH_RUNS=${BENCH_RUNS:-30}
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-60}
BENCH_KEEP=${BENCH_KEEP:-0}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

for tool in python3 docker; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (containers)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/berth-runbench.XXXXXX)
PIDS=()
ETC_CREATED=()

kill_under() {  # SIGKILL processes whose command line names DIR/ (shims, containerd)
    local needle="$1/" p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = $$ ] && continue
        { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$needle" && kill -KILL "$p" 2>/dev/null
    done
}
cleanup() {
    local pid m
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    kill_under "$WORK"
    awk '{print $5}' /proc/self/mountinfo | grep -F "$WORK/" | sort -r | while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    done
    for p in "${ETC_CREATED[@]}"; do rm -f "$p" 2>/dev/null || rmdir "$p" 2>/dev/null; done
    if [ "$BENCH_KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export DOCKER_CONFIG="$WORK/cli-config"
mkdir -p "$DOCKER_CONFIG"
dock() { local host=$1; shift; env -u DOCKER_CONTEXT -u DOCKER_API_VERSION docker -H "$host" "$@"; }

wait_ready() {  # NAME PID HOST LOG
    for _ in $(seq $((BENCH_START_TIMEOUT * 4))); do
        dock "$3" version --format '{{.Server.Version}}' >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.25
    done
    log "$1 failed to start: $(tail -c 800 "$4" | tr '\n' ' ')"
    return 1
}

start_berth() {
    local d="$WORK/berth"
    mkdir -p "$d"
    DHOST="unix://$d/b.sock"
    RUST_LOG=warn NO_COLOR=1 "$BERTH" daemon -H "$DHOST" --data-root "$d/data" --exec-root "$d/exec" \
        --pidfile "$d/b.pid" >"$d/log" 2>&1 &
    DPID=$!; PIDS+=("$DPID")
    wait_ready berth "$DPID" "$DHOST" "$d/log"
}

start_dockerd() {
    local d="$WORK/dockerd"
    mkdir -p "$d"
    echo '{}' >"$d/daemon.json"
    DHOST="unix://$d/d.sock"
    # dockerd 20.10 writes its trust key to /etc/docker/key.json whatever it is told.
    [ -e /etc/docker ] || ETC_CREATED=(/etc/docker "${ETC_CREATED[@]}")
    [ -e /etc/docker/key.json ] || ETC_CREATED=(/etc/docker/key.json "${ETC_CREATED[@]}")
    "$DOCKERD" --config-file "$d/daemon.json" -H "$DHOST" --data-root "$d/data" --exec-root "$d/exec" \
        --pidfile "$d/d.pid" --bridge=none --iptables=false --ip6tables=false >"$d/log" 2>&1 &
    DPID=$!; PIDS+=("$DPID")
    wait_ready dockerd "$DPID" "$DHOST" "$d/log"
}

if [ ! -x "$BERTH" ] || [ ! -x "$FIXTURE" ]; then
    log "building berth and berth-fixture (release)"
    (cd "$ROOT" && cargo build --release -p berth -p berth-testkit --bin berth --bin berth-fixture) \
        >"$WORK/cargo.log" 2>&1 || { log "build failed: $(tail -5 "$WORK/cargo.log")"; exit 2; }
fi
"$FIXTURE" docker-archive --out "$WORK/busybox.tar" --ref bench/busybox:latest >/dev/null || exit 2

# bench SYS: loads the image, one warm-up run, then BENCH_RUNS timed runs; prints the times.
bench() {
    local sys=$1 i t0 t1
    "start_$sys" || return 1
    dock "$DHOST" load -i "$WORK/busybox.tar" >/dev/null || { log "$sys: load failed"; return 1; }
    dock "$DHOST" run --rm --network none bench/busybox true >/dev/null 2>&1 || {
        log "$sys: warm-up run failed: $(dock "$DHOST" run --rm --network none bench/busybox true 2>&1 | tail -2)"
        return 1
    }
    log "$sys: $BENCH_RUNS runs"
    for i in $(seq "$BENCH_RUNS"); do
        t0=$EPOCHREALTIME
        dock "$DHOST" run --rm --network none bench/busybox true >/dev/null 2>&1 || { log "$sys: run $i failed"; return 1; }
        t1=$EPOCHREALTIME
        echo "$sys $t0 $t1" >>"$WORK/times"
    done
    # Resident memory of the daemon after the runs (kB).
    echo "$sys rss $(awk '/VmRSS/{print $2}' "/proc/$DPID/status")" >>"$WORK/rss"
}

: >"$WORK/times"; : >"$WORK/rss"
bench berth || log "berth failed"
bench dockerd || log "dockerd failed"

python3 - "$WORK/times" "$WORK/rss" "$BENCH_RUNS" <<'PY'
import statistics, sys
times, rss, runs = sys.argv[1], sys.argv[2], sys.argv[3]
per = {}
for line in open(times):
    sys_, t0, t1 = line.split()
    per.setdefault(sys_, []).append(float(t1) - float(t0))
mem = {l.split()[0]: int(l.split()[2]) for l in open(rss) if l.strip()}
print(f"docker run --rm --network none IMG true, {runs} sequential runs each")
print(f"{'daemon':10} {'median ms':>10} {'p90 ms':>8} {'total s':>8} {'daemon RSS MB':>14}")
for s, v in per.items():
    v.sort()
    p90 = v[int(len(v) * 0.9) - 1]
    print(f"{s:10} {statistics.median(v)*1000:10.1f} {p90*1000:8.1f} {sum(v):8.2f} {mem.get(s, 0)/1024:14.1f}")
if "berth" in per and "dockerd" in per:
    r = statistics.median(per["dockerd"]) / statistics.median(per["berth"])
    print(f"dockerd / berth (median): {r:.1f}x")
PY

#!/usr/bin/env bash
# Networking benchmark, in one run, Debian's dockerd 20.10 (+ containerd, runc, docker-proxy)
# against `berth daemon`, both driven by the same docker CLI, each daemon in a network namespace
# of its own (so neither touches the host's links or firewall):
#   1. `docker run --rm IMG true` on the default bridge network, BENCH_RUNS sequential runs;
#   2. one container publishing 100 ports (-p 20000-20099:20000-20099): the processes and
#      resident memory that costs (dockerd: one docker-proxy per port; Berth: nftables rules);
#   3. TCP throughput through a published port: 1 GiB from another namespace (the path a remote
#      client takes) and from the daemon's own loopback (127.0.0.1), into `nc -l` in a container.
#      (iperf3 is not in the busybox test image; a python3 sender and `nc -l` drive the same
#      path.)
# Progress goes to stderr, the tables to stdout.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BERTH=${BERTH:-$ROOT/target/release/berth}
FIXTURE=${FIXTURE:-$ROOT/target/release/berth-fixture}
DOCKERD=${DOCKERD:-$(command -v dockerd || echo /usr/sbin/dockerd)}
BENCH_RUNS=${BENCH_RUNS:-50}
BENCH_MB=${BENCH_MB:-1024}
IMAGE=bench/net:latest

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }
for tool in docker python3 busybox ip nsenter nft timeout; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/berth-netbench.XXXXXX)
TAG=bnb$$
NSS=()
PIDS=()
export DOCKER_CONFIG="$WORK/cli-config"
mkdir -p "$DOCKER_CONFIG"; echo '{}' >"$DOCKER_CONFIG/config.json"
unset DOCKER_CONTEXT DOCKER_API_VERSION DOCKER_HOST

cleanup() {
    local p ns
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 2
    for p in /proc/[0-9]*; do
        { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -qF -- "$WORK/" && kill -KILL "${p#/proc/}" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    sleep 0.5
    awk '{print $5}' /proc/self/mountinfo | grep -F "$WORK/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
    for ns in "${NSS[@]}"; do ip netns delete "$ns" 2>/dev/null; done
    rm -rf /etc/docker/key.json.bnb 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT

# A daemon's namespace: "NAME" with 192.0.2.1/24 on a veth to "NAME-c" (the client, 192.0.2.2).
make_ns() {
    local ns=$1
    ip netns add "$ns" && NSS+=("$ns")
    ip netns add "$ns-c" && NSS+=("$ns-c")
    ip -n "$ns" link set lo up; ip -n "$ns-c" link set lo up
    ip -n "$ns" link add up0 type veth peer name eth0 netns "$ns-c"
    ip -n "$ns" addr add 192.0.2.1/24 dev up0; ip -n "$ns" link set up0 up
    ip -n "$ns-c" addr add 192.0.2.2/24 dev eth0; ip -n "$ns-c" link set eth0 up
}
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" "$@"; }
dock() { timeout 120 docker -H "$DHOST" "$@"; }

start_daemon() {  # start_daemon SYS
    local sys=$1 d="$WORK/$1" i
    mkdir -p "$d"; make_ns "$TAG-$sys"
    DHOST="unix://$d/s.sock"
    if [ "$sys" = dockerd ]; then
        echo '{}' >"$d/daemon.json"
        [ -e /etc/docker/key.json ] || touch /etc/docker/key.json.bnb
        nsenter --net="/run/netns/$TAG-$sys" "$DOCKERD" --config-file "$d/daemon.json" -H "$DHOST" --data-root "$d/data" \
            --exec-root "$d/exec" --pidfile "$d/pid" >"$d/log" 2>&1 &
    else
        RUST_LOG=warn nsenter --net="/run/netns/$TAG-$sys" "$BERTH" daemon -H "$DHOST" --data-root "$d/data" --exec-root "$d/exec" \
            --pidfile "$d/pid" >"$d/log" 2>&1 &
    fi
    # nsenter execs the daemon: $! is the daemon itself.
    DPID=$!; PIDS+=("$DPID")
    for i in $(seq 240); do dock version >/dev/null 2>&1 && break; sleep 0.25; done
    dock load -i "$WORK/image.tar" >/dev/null || { log "$sys: load failed: $(tail -3 "$d/log")"; return 1; }
}

median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.stdin if x.strip()]; print(f"{statistics.median(v):.1f}" if v else "n/a")'; }

bench() {  # bench SYS
    local sys=$1 i t0 t1 id pids kib
    start_daemon "$sys" || return 1
    dock run --rm "$IMAGE" true >/dev/null 2>&1   # warm-up (creates the bridge)
    : >"$WORK/$sys.runs"
    for i in $(seq "$BENCH_RUNS"); do
        t0=$EPOCHREALTIME
        dock run --rm "$IMAGE" true >/dev/null 2>"$WORK/$sys.err" || { log "$sys: run failed: $(cat "$WORK/$sys.err")"; break; }
        t1=$EPOCHREALTIME
        echo "$(( (${t1/./} - ${t0/./}) ))" >>"$WORK/$sys.runs"
    done
    RUN[$sys]=$(awk '{print $1/1000}' "$WORK/$sys.runs" | median)
    log "$sys: docker run --rm on the bridge: median ${RUN[$sys]} ms"

    # 100 published ports.
    id=$(dock run -d -p 20000-20099:20000-20099 "$IMAGE" sleep 3600)
    sleep 2
    # The daemon is the parent of its port proxies (dockerd's docker-proxy, one per port).
    pids=$(pgrep -P "$DPID" -x docker-proxy)
    PROCS[$sys]=$(echo "$pids" | grep -c . )
    kib=0; for p in $pids; do kib=$((kib + $(awk '/VmRSS/{print $2}' /proc/"$p"/status))); done
    PORTKIB[$sys]=$kib
    RULES[$sys]=$(in_ns "$TAG-$sys" nft list ruleset 2>/dev/null | grep -c "dport 200")
    DRSS[$sys]=$(awk '/VmRSS/{print $2}' /proc/"$DPID"/status)
    dock rm -f "$id" >/dev/null

    # Throughput: 1 GiB into `nc -l` through a published port.
    for from in remote loopback; do
        id=$(dock run -d -p 5201:5201 "$IMAGE" sh -c 'busybox nc -l -p 5201 >/dev/null')
        sleep 1
        # The client: python3 (the host's busybox-static nc crashes in getaddrinfo).
        if [ "$from" = remote ]; then target=(nsenter --net="/run/netns/$TAG-$sys-c" python3 -c "$SEND" 192.0.2.1 5201 "$BENCH_MB")
        else target=(nsenter --net="/run/netns/$TAG-$sys" python3 -c "$SEND" 127.0.0.1 5201 "$BENCH_MB"); fi
        t0=$EPOCHREALTIME
        if ! timeout 120 "${target[@]}"; then
            log "$sys: $from transfer failed"; dock rm -f "$id" >/dev/null; continue
        fi
        t1=$EPOCHREALTIME
        TPUT[$sys-$from]=$(python3 -c "print(f'{$BENCH_MB/((${t1/./}-${t0/./})/1e6):.0f}')")
        log "$sys: $from throughput ${TPUT[$sys-$from]} MB/s"
        dock rm -f "$id" >/dev/null
    done
    kill -TERM "$DPID"; wait "$DPID" 2>/dev/null
}

# Sends N MiB to HOST PORT and waits for the peer to close.
SEND='import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
buf = bytes(1 << 20)
for _ in range(int(sys.argv[3])):
    s.sendall(buf)
s.shutdown(socket.SHUT_WR)
s.recv(1)'
declare -A RUN PROCS PORTKIB RULES DRSS TPUT
if [ ! -x "$BERTH" ] || [ ! -x "$FIXTURE" ]; then
    (cd "$ROOT" && cargo build --release -p berth --bin berth -p berth-testkit --bin berth-fixture) >"$WORK/cargo.log" 2>&1 || { tail "$WORK/cargo.log"; exit 2; }
fi
"$FIXTURE" docker-archive --out "$WORK/image.tar" --ref "$IMAGE" >/dev/null
log "work $WORK, $BENCH_RUNS runs, load $(cut -d' ' -f1 /proc/loadavg)"
[ -x "$DOCKERD" ] && bench dockerd
bench berth
# The docker CLI alone: the same command against benches/run/cli_floor.py, a stand-in server
# that answers its five requests at once (a container that costs nothing).
cli_floor() {
    local sock="$WORK/floor.sock" pid i t0 t1
    python3 "$ROOT/benches/run/cli_floor.py" "$sock" 2>"$WORK/floor.log" &
    pid=$!
    for i in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
    DHOST="unix://$sock"
    dock run --rm "$IMAGE" true >/dev/null 2>&1
    : >"$WORK/floor.runs"
    for i in $(seq "$BENCH_RUNS"); do
        t0=$EPOCHREALTIME
        dock run --rm "$IMAGE" true >/dev/null 2>"$WORK/floor.err" || { log "cli floor: run failed: $(cat "$WORK/floor.err")"; break; }
        t1=$EPOCHREALTIME
        echo "$(( (${t1/./} - ${t0/./}) ))" >>"$WORK/floor.runs"
    done
    kill "$pid"; wait "$pid" 2>/dev/null
    RUN[floor]=$(awk '{print $1/1000}' "$WORK/floor.runs" | median)
    log "docker CLI alone: median ${RUN[floor]} ms"
}
cli_floor
ratio() { python3 -c "a,b='$1','$2'; print(f'{float(a)/float(b):.2f}x' if a not in ('','n/a') and b not in ('','n/a') and float(b)>0 else 'n/a')"; }
echo
echo "Networking: dockerd 20.10 vs berth, same docker CLI, each daemon in its own netns; $(nproc) CPUs"
echo
echo "| measure | dockerd | berth | dockerd/berth |"
echo "|---|---|---|---|"
echo "| docker run --rm IMG true, default bridge, median of $BENCH_RUNS (ms) | ${RUN[dockerd]:-n/a} | ${RUN[berth]:-n/a} | $(ratio "${RUN[dockerd]:-}" "${RUN[berth]:-}") |"
echo "| (info) the docker CLI alone, against a stub that answers at once, median (ms) | ${RUN[floor]:-n/a} | ${RUN[floor]:-n/a} | $(ratio "${RUN[dockerd]:-}" "${RUN[floor]:-}") (dockerd/floor: the most any daemon could reach) |"
echo "| processes for 100 published ports | ${PROCS[dockerd]:-n/a} | ${PROCS[berth]:-n/a} | |"
echo "| resident memory of those processes (KiB) | ${PORTKIB[dockerd]:-n/a} | ${PORTKIB[berth]:-n/a} | |"
echo "| firewall rules naming the ports | ${RULES[dockerd]:-n/a} | ${RULES[berth]:-n/a} | |"
echo "| daemon resident memory with them (KiB) | ${DRSS[dockerd]:-n/a} | ${DRSS[berth]:-n/a} | |"
echo "| TCP through a published port, from another netns (MB/s) | ${TPUT[dockerd-remote]:-n/a} | ${TPUT[berth-remote]:-n/a} | $(ratio "${TPUT[berth-remote]:-}" "${TPUT[dockerd-remote]:-}") (berth/dockerd) |"
echo "| TCP through a published port, from 127.0.0.1 (MB/s) | ${TPUT[dockerd-loopback]:-n/a} | ${TPUT[berth-loopback]:-n/a} | $(ratio "${TPUT[berth-loopback]:-}" "${TPUT[dockerd-loopback]:-}") (berth/dockerd) |"

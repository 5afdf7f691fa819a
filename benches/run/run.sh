#!/usr/bin/env bash
# Container start benchmark, in one run: `docker run --rm --network none IMG true` through
# Debian's dockerd 20.10 (+ its containerd + runc) and through `berth daemon`, both driven by the
# same docker CLI; `podman run --rm --network none IMG true` (runtime runc); bare `runc run` on a
# prepared bundle; and `berth run` when the binary has that command. BENCH_RUNS sequential runs
# each. Then the resident memory of the per-container process (containerd-shim-runc-v2, berth
# shim, podman's conmon) with one `sleep 3600` container running. See README.md beside this file.
# Progress goes to stderr, the tables to stdout.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LIB="$HERE/runlib.py"

BERTH=${BERTH:-$ROOT/target/release/berth}
FIXTURE=${FIXTURE:-$ROOT/target/release/berth-fixture}
DOCKERD=${DOCKERD:-$(command -v dockerd || echo /usr/sbin/dockerd)}
RUNC=${RUNC:-$(command -v runc || echo /usr/sbin/runc)}
PODMAN=${PODMAN:-$(command -v podman || echo /usr/bin/podman)}
BENCH_RUNS=${BENCH_RUNS:-100}
BENCH_WARMUP=${BENCH_WARMUP:-1}
BENCH_SETTLE=${BENCH_SETTLE:-2}
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-60}
BENCH_OP_TIMEOUT=${BENCH_OP_TIMEOUT:-120}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_STRICT=${BENCH_STRICT:-0}
IMAGE=bench/run:latest

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

for tool in python3 docker timeout curl; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (daemons, runc, podman)" >&2; exit 2; }
[[ "$BENCH_RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "BENCH_RUNS must be a positive integer" >&2; exit 2; }

WORK=$(mktemp -d /tmp/berth-runbench.XXXXXX)
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
PIDS=()
CREATED=()   # paths outside $WORK that a tool created (dockerd's /etc/docker/key.json, podman's locks)

# Processes whose command line names DIR/ (dockerd's containerd, the shims, conmon, runc), and
# everything below them (the containers' processes).
kill_under() {
    local needle="$1/" p victims=() todo=() kids
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = $$ ] && continue
        { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF -- "$needle" && todo+=("$p")
    done
    while [ ${#todo[@]} -gt 0 ]; do
        p=${todo[0]}; todo=("${todo[@]:1}")
        victims+=("$p")
        kids=$(cat /proc/"$p"/task/*/children 2>/dev/null)
        for k in $kids; do todo+=("$k"); done
    done
    for p in "${victims[@]}"; do kill -KILL "$p" 2>/dev/null; done
    return 0
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

runc_leftovers() {  # delete containers left in our runc state root
    local id
    [ -d "$WORK/runc/state" ] || return 0
    for id in $("$RUNC" --root "$WORK/runc/state" list -q 2>/dev/null); do
        "$RUNC" --root "$WORK/runc/state" delete -f "$id" >/dev/null 2>&1
    done
}

cleanup() {
    local pid p
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    runc_leftovers
    kill_under "$WORK"
    sleep 0.2
    unmount_under "$WORK"
    for p in "${CREATED[@]}"; do rm -rf "$p" 2>/dev/null; done
    if [ "$BENCH_KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK" 2>/dev/null || log "could not remove all of $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

result() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$RESULTS"; }
note() { result note "$1" "" "$2"; log "$1: $2"; }  # a cell that holds a reason, never a number
first_line() { grep -v '^\s*$' "$1" 2>/dev/null | tail -n 3 | tr '\n' ' ' | cut -c1-100; }
remember_created() {  # remember_created PATH: remove PATH on exit if it does not exist now
    [ -e "$1" ] || CREATED=("$1" "${CREATED[@]}")
}

# ---------------------------------------------------------------- timing
# time_runs KEY FUNC: BENCH_WARMUP untimed calls, then BENCH_RUNS timed calls of `FUNC I`
# (stdout and stdin to /dev/null, stderr to a file), each one timed with $EPOCHREALTIME.
# The first failure stops the series and becomes the KEY's note.
us() { local t=${1/./}; echo $((10#$t)); }
time_runs() {
    local key=$1 fn=$2 i t0 t1 err="$WORK/$1.err"
    for i in $(seq "$BENCH_WARMUP"); do
        if ! "$fn" "w$i" >/dev/null 2>"$err" </dev/null; then
            note "$key" "failed (warm-up): $(first_line "$err")"; return 1
        fi
    done
    for i in $(seq "$BENCH_RUNS"); do
        t0=$EPOCHREALTIME
        if ! "$fn" "$i" >/dev/null 2>"$err" </dev/null; then
            note "$key" "failed at run $i: $(first_line "$err")"; return 1
        fi
        t1=$EPOCHREALTIME
        result run_us "$key" "$(( $(us "$t1") - $(us "$t0") ))"
    done
    log "$key: $BENCH_RUNS runs done"
}

# shim_mem KEY KIND ID [DIR]: the memory of the per-container process after BENCH_SETTLE seconds:
# the KIND process whose command line names the container ID, else (the only container running)
# the one that names DIR.
shim_mem() {
    local key=$1 kind=$2 needle=$3 dir=${4:-} pid="" i
    sleep "$BENCH_SETTLE"
    for i in $(seq 20); do
        pid=$(python3 "$LIB" find-proc "$kind" "$needle") && break
        if [ -n "$dir" ] && pid=$(python3 "$LIB" find-proc "$kind" "$dir/"); then
            result meta "${key}_found_by" "its command line names $dir/, not the container ID"; break
        fi
        pid=""
        sleep 0.25
    done
    if [ -z "$pid" ]; then note "$key" "no $kind process found for container ${needle:0:12}"; return 1; fi
    result mem_kib "$key" "$(python3 "$LIB" mem "$pid")"
    result meta "${key}_cmdline" "$(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-200)"
    log "$key: pid $pid, $(python3 "$LIB" mem "$pid") KiB (VmRSS RssAnon Pss)"
}

# ---------------------------------------------------------------- docker-API daemons
# The CLI's own config dir; no context, API version or TLS from the caller's environment. Set once
# here (not with `env` per call) so every timed command costs the same one `timeout` wrapper.
export DOCKER_CONFIG="$WORK/cli-config"
mkdir -p "$DOCKER_CONFIG"
echo '{}' >"$DOCKER_CONFIG/config.json"  # podman reads it too (for registry auth)
unset DOCKER_CONTEXT DOCKER_API_VERSION DOCKER_TLS_VERIFY DOCKER_CERT_PATH DOCKER_HOST
dock() {  # dock HOST args...
    local host=$1; shift
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

start_berth() {
    local d="$WORK/berth"
    mkdir -p "$d"
    DHOST="unix://$d/b.sock"; DDIR=$d
    RUST_LOG=${BERTH_RUST_LOG:-warn} NO_COLOR=1 "$BERTH" daemon -H "$DHOST" --data-root "$d/data" \
        --exec-root "$d/exec" --pidfile "$d/b.pid" >"$d/log" 2>&1 &
    DPID=$!; PIDS+=("$DPID")
    wait_ready berth "$DPID" "$DHOST" "$d/log"
}

start_dockerd() {
    local d="$WORK/dockerd"
    mkdir -p "$d"
    echo '{}' >"$d/daemon.json"
    DHOST="unix://$d/d.sock"; DDIR=$d
    # dockerd 20.10 writes its trust key to /etc/docker/key.json whatever it is told.
    remember_created /etc/docker
    remember_created /etc/docker/key.json
    "$DOCKERD" --config-file "$d/daemon.json" -H "$DHOST" --data-root "$d/data" --exec-root "$d/exec" \
        --pidfile "$d/d.pid" --bridge=none --iptables=false --ip6tables=false >"$d/log" 2>&1 &
    DPID=$!; PIDS+=("$DPID")
    wait_ready dockerd "$DPID" "$DHOST" "$d/log"
}

stop_daemon() {
    stop_pid "$DPID"
    kill_under "$DDIR"
    unmount_under "$DDIR"
}

docker_run_once() { dock "$DHOST" run --rm --network none "$IMAGE" true; }
berth_run_once() { timeout "$BENCH_OP_TIMEOUT" "$BERTH" -H "$DHOST" run --rm --network none "$IMAGE" true; }

# A Berth without containers answers POST /containers/create with 501 Not Implemented.
berth_has_containers() {
    local sock=${DHOST#unix://} code
    code=$(curl -s -o "$WORK/create-probe.json" -w '%{http_code}' --max-time 10 --unix-socket "$sock" \
        -X POST -H 'Content-Type: application/json' \
        -d "{\"Image\":\"$IMAGE\",\"Cmd\":[\"true\"],\"HostConfig\":{\"NetworkMode\":\"none\"}}" \
        "http://berth/containers/create?name=berth-bench-probe")
    if [ "$code" = 501 ]; then
        BERTH_WHY="not built (501 on POST /containers/create)"
        result meta berth_create_answer "501 $(head -c 160 "$WORK/create-probe.json")"
        return 1
    fi
    dock "$DHOST" rm -f berth-bench-probe >/dev/null 2>&1
    return 0
}

# bench_daemon SYS: load the image, time docker run, then the shim's memory.
bench_daemon() {
    local sys=$1 shimkey=$2 shimkind=$3 id
    if ! "start_$sys"; then
        note "$sys" "failed to start: $(tail -c 160 "$DDIR/log" | tr '\n' ' ')"
        note "$shimkey" "daemon failed to start"
        [ "$sys" = berth ] && note berth-run "daemon failed to start"
        return 1
    fi
    result meta "${sys}_version" "$(dock "$DHOST" version --format '{{.Server.Version}}' 2>&1)"
    log "$sys: pid $DPID at $DHOST"
    if ! dock "$DHOST" load -i "$WORK/image.tar" >"$WORK/$sys-load.log" 2>&1; then
        note "$sys" "docker load failed: $(first_line "$WORK/$sys-load.log")"
        note "$shimkey" "docker load failed"
        [ "$sys" = berth ] && note berth-run "docker load failed"
        stop_daemon; return 1
    fi
    if [ "$sys" = berth ] && ! berth_has_containers; then
        note berth "$BERTH_WHY"
        note "$shimkey" "$BERTH_WHY"
        note berth-run "$BERTH_WHY"
        stop_daemon; return 0
    fi
    time_runs "$sys" docker_run_once
    if [ "$sys" = berth ]; then
        if "$BERTH" run --help >/dev/null 2>&1; then
            time_runs berth-run berth_run_once
        else
            note berth-run "not built (no \`berth run\` command)"
        fi
    fi
    if id=$(dock "$DHOST" run -d --network none "$IMAGE" sleep 3600 2>"$WORK/$sys-sleep.err"); then
        shim_mem "$shimkey" "$shimkind" "$id" "$DDIR"
        dock "$DHOST" rm -f "$id" >/dev/null 2>&1 || log "$sys: rm -f of the sleeping container failed"
    else
        note "$shimkey" "docker run -d failed: $(first_line "$WORK/$sys-sleep.err")"
    fi
    stop_daemon
}

# ---------------------------------------------------------------- podman (runtime runc)
PODMAN_DIR="$WORK/podman"
pod() {
    CONTAINERS_CONF="$PODMAN_DIR/containers.conf" CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf" \
        CONTAINERS_REGISTRIES_CONF="$PODMAN_DIR/registries.conf" TMPDIR="$PODMAN_DIR/tmp" \
        timeout "$BENCH_OP_TIMEOUT" "$PODMAN" --root "$PODMAN_DIR/root" --runroot "$PODMAN_DIR/run" \
        --tmpdir "$PODMAN_DIR/libpod-tmp" --volumepath "$PODMAN_DIR/volumes" \
        --network-config-dir "$PODMAN_DIR/networks" --runtime "$RUNC" --cgroup-manager cgroupfs \
        --events-backend file --storage-driver overlay "$@"
}
podman_run_once() { pod run --rm --pull never --network none "$IMAGE" true; }

bench_podman() {
    local id
    if [ ! -x "$PODMAN" ]; then
        note podman "no podman binary (apt-get install podman)"; note conmon "no podman binary"; return 1
    fi
    mkdir -p "$PODMAN_DIR"/{root,run,tmp,libpod-tmp,volumes,networks}
    # Podman as root raises the container's RLIMIT_NOFILE and RLIMIT_NPROC to 1048576 and
    # 4194304, which runc cannot do without CAP_SYS_RESOURCE ("error setting rlimit type 7:
    # operation not permitted"); give it the runc spec's 1024 instead (irrelevant to `true`).
    printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n[engine]\nevents_logger = "file"\ncgroup_manager = "cgroupfs"\n' \
        >"$PODMAN_DIR/containers.conf"
    printf '[storage]\ndriver = "overlay"\nrunroot = "%s"\ngraphroot = "%s"\n' \
        "$PODMAN_DIR/run" "$PODMAN_DIR/root" >"$PODMAN_DIR/storage.conf"
    printf 'unqualified-search-registries = []\n' >"$PODMAN_DIR/registries.conf"
    # podman's lock manager keeps its locks in /dev/shm; it may create /run/libpod as well.
    remember_created /dev/shm/libpod_lock
    remember_created /run/libpod
    remember_created /run/containers
    remember_created /var/lib/containers  # its blob-info cache (cache/blob-info-cache-v1.boltdb)
    result meta podman_version "$(pod version --format '{{.Client.Version}}' 2>&1 | head -1)"
    if ! pod load -i "$WORK/image.tar" >"$WORK/podman-load.log" 2>&1; then
        note podman "podman load failed: $(first_line "$WORK/podman-load.log")"; note conmon "podman load failed"
        return 1
    fi
    time_runs podman podman_run_once
    if id=$(pod run -d --pull never --network none "$IMAGE" sleep 3600 2>"$WORK/podman-sleep.err"); then
        shim_mem conmon conmon "$id"
        pod rm -f -t 0 "$id" >/dev/null 2>&1 || log "podman: rm -f of the sleeping container failed"
    else
        note conmon "podman run -d failed: $(first_line "$WORK/podman-sleep.err")"
    fi
    unmount_under "$PODMAN_DIR"
}

# ---------------------------------------------------------------- bare runc
RUNC_ID_PREFIX="berth-runbench-$$"
runc_run_once() {
    timeout "$BENCH_OP_TIMEOUT" "$RUNC" --root "$WORK/runc/state" run --bundle "$WORK/runc/bundle" \
        "$RUNC_ID_PREFIX-$1"
}

bench_runc() {
    if [ ! -x "$RUNC" ]; then note runc "no runc binary"; return 1; fi
    result meta runc_version "$("$RUNC" --version | head -1)"
    mkdir -p "$WORK/runc/state" "$WORK/runc/bundle"
    if ! python3 "$LIB" rootfs "$WORK/image.tar" "$WORK/runc/bundle/rootfs" 2>"$WORK/runc-rootfs.err"; then
        note runc "rootfs unpack failed: $(first_line "$WORK/runc-rootfs.err")"; return 1
    fi
    (cd "$WORK/runc/bundle" && "$RUNC" spec) && python3 "$LIB" spec "$WORK/runc/bundle/config.json" \
        || { note runc "runc spec failed"; return 1; }
    time_runs runc runc_run_once
    runc_leftovers
}

# ---------------------------------------------------------------- the docker CLI's floor
# The same `docker run` against cli_floor.py, a stand-in server that answers the five requests
# at once (a container that costs nothing): what the docker CLI alone costs per run.
bench_cli_floor() {
    local sock="$WORK/floor/floor.sock" i
    mkdir -p "$WORK/floor"
    python3 "$HERE/cli_floor.py" "$sock" 2>"$WORK/floor/log" &
    local pid=$!; PIDS+=("$pid")
    for i in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
    if [ ! -S "$sock" ]; then note cli-floor "stub failed to start: $(first_line "$WORK/floor/log")"; stop_pid "$pid"; return 1; fi
    DHOST="unix://$sock"
    time_runs cli-floor docker_run_once
    stop_pid "$pid"
}

# ---------------------------------------------------------------- main
log "work dir $WORK; $BENCH_RUNS runs each (+$BENCH_WARMUP warm-up); load $(cut -d' ' -f1 /proc/loadavg)"
result meta cpus "$(nproc)"
result meta kernel "$(uname -r)"
result meta loadavg_start "$(cut -d' ' -f1 /proc/loadavg)"
result meta berth_binary "$BERTH"
if [ ! -x "$BERTH" ] || [ ! -x "$FIXTURE" ]; then
    log "building berth and berth-fixture (cargo build --release)"
    (cd "$ROOT" && nice cargo build --release -p berth --bin berth -p berth-testkit --bin berth-fixture) >"$WORK/cargo.log" 2>&1 \
        || { log "build failed: $(tail -5 "$WORK/cargo.log")"; exit 2; }
fi
"$FIXTURE" docker-archive --out "$WORK/image.tar" --ref "$IMAGE" >"$WORK/fixture.log" 2>&1 \
    || { log "fixture failed: $(tail -3 "$WORK/fixture.log")"; exit 2; }
result meta image "$IMAGE: berth-fixture docker-archive (busybox-static, 3 layers, $(($(stat -c %s "$WORK/image.tar") / 1000)) kB)"

if [ -x "$DOCKERD" ]; then
    bench_daemon dockerd containerd-shim containerd-shim
else
    note dockerd "no dockerd binary (apt-get install docker.io)"; note containerd-shim "no dockerd binary"
fi
bench_daemon berth berth-shim berth-shim
bench_cli_floor
bench_podman
bench_runc

result meta loadavg_end "$(cut -d' ' -f1 /proc/loadavg)"
echo
echo "Container start: \`run --rm --network none $IMAGE true\`, $BENCH_RUNS sequential runs each (after $BENCH_WARMUP warm-up), wall time per command; $(nproc) CPUs"
python3 "$LIB" report "$RESULTS"
rc=$?
[ "$BENCH_STRICT" = 1 ] && exit "$rc"
exit 0

#!/usr/bin/env bash
# Registry benchmark: Berth's registry vs Distribution 2.8 vs nginx static files.
# See README.md beside this file.  Progress goes to stderr, the table to stdout.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LIB="$HERE/benchlib.py"

BERTH=${BERTH:-$ROOT/target/release/berth}
BERTH_ARGS=${BERTH_ARGS:-}                 # extra args for `berth registry serve`
# Both registries run as shipped: one access-log line per request (Berth's default info level;
# Distribution's access log on, level info). Sites run with logging, so this is the real cost.
BERTH_RUST_LOG=${BERTH_RUST_LOG:-info}
DISTRIBUTION=${DISTRIBUTION:-docker-registry}
NGINX=${NGINX:-nginx}
BENCH_SECONDS=${BENCH_SECONDS:-10}         # each measured wrk run
BENCH_WARMUP=${BENCH_WARMUP:-2}            # unmeasured wrk run before the first measured one
BENCH_ROUNDS=${BENCH_ROUNDS:-3}            # skopeo push+pull rounds (median reported)
BENCH_WRK_ROUNDS=${BENCH_WRK_ROUNDS:-3}    # wrk rounds per server and workload (median reported)
BENCH_LAYERS=${BENCH_LAYERS:-6}
BENCH_LAYER_MB=${BENCH_LAYER_MB:-55}
BENCH_FIXTURE=${BENCH_FIXTURE:-auto}       # auto | berth | python
BENCH_START_TIMEOUT=${BENCH_START_TIMEOUT:-30}
BENCH_JSON=${BENCH_JSON:-}                 # write results as JSON to this path
BENCH_KEEP=${BENCH_KEEP:-0}                # 1: keep the temp dir (logs, configs)
BENCH_STRICT=${BENCH_STRICT:-0}            # 1: exit 3 if a target is not met
MANIFEST_CONNS=${MANIFEST_CONNS:-64}
BLOB_CONNS=${BLOB_CONNS:-16}
WRK_THREADS=${WRK_THREADS:-2}

OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
ACCEPT="$OCI_MANIFEST, $DOCKER_MANIFEST"
REPO=bench/img
TAG=latest

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "print('%.3f' % ($2 - $1))"; }

for tool in python3 skopeo wrk curl "$DISTRIBUTION" "$NGINX"; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/berth-regbench.XXXXXX)
chmod 755 "$WORK"                          # nginx workers run as nobody
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
PIDS=()
USED_PORTS=()

cleanup() {
    local pid i
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do
        for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "$BENCH_KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_pid() {
    local pid=$1 i p keep=()
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

freeport() {
    local p
    p=$(python3 "$LIB" freeport "${USED_PORTS[@]}") || return 1
    USED_PORTS+=("$p")
    echo "$p"
}

# result MEASURE SYSTEM VALUE [NOTE] [EXTRA]
result() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" "${5:-}" >>"$RESULTS"; }

http_status() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@" 2>/dev/null; }

# ---------------------------------------------------------------- the image
IMG="$WORK/image"
make_image() {
    local have_fixture=0
    if [ "$BENCH_FIXTURE" != python ]; then
        if (cd "$ROOT" && cargo metadata --no-deps --format-version 1 2>/dev/null) |
            python3 -c 'import json,sys
m=json.load(sys.stdin)
sys.exit(0 if any(t["name"]=="berth-fixture" for p in m["packages"] for t in p["targets"]) else 1)'
        then have_fixture=1; fi
    fi
    if [ "$have_fixture" = 1 ]; then
        log "image: berth-fixture oci-layout, $BENCH_LAYERS x $BENCH_LAYER_MB MB random layers"
        if (cd "$ROOT" && cargo run --release -q -p berth-testkit --bin berth-fixture -- \
                oci-layout --out "$IMG" --tag "$TAG" \
                --random-layers "$BENCH_LAYERS" --layer-mb "$BENCH_LAYER_MB") >"$WORK/fixture.log" 2>&1 &&
            python3 "$LIB" layout-info "$IMG" "$TAG" >"$WORK/image.env" 2>>"$WORK/fixture.log"; then
            echo berth-fixture >"$WORK/image.source"
            return 0
        fi
        log "berth-fixture failed ($(tail -1 "$WORK/fixture.log")); falling back to the python generator"
        [ "$BENCH_FIXTURE" = berth ] && return 1
        rm -rf "$IMG"
    fi
    log "image: python generator, $BENCH_LAYERS x $BENCH_LAYER_MB MB random layers"
    python3 "$HERE/gen_oci_layout.py" --out "$IMG" --tag "$TAG" \
        --random-layers "$BENCH_LAYERS" --layer-mb "$BENCH_LAYER_MB" >"$WORK/fixture.log" 2>&1 &&
        python3 "$LIB" layout-info "$IMG" "$TAG" >"$WORK/image.env" || return 1
    echo python >"$WORK/image.source"
}

# ---------------------------------------------------------------- servers
# Each start_* sets PID and ADDR (host:port) and returns non-zero on failure.
start_berth() {
    local dir=$1 port line i
    port=$(freeport) || return 1
    mkdir -p "$dir/root"
    # shellcheck disable=SC2086
    RUST_LOG=$BERTH_RUST_LOG "$BERTH" registry serve --addr "127.0.0.1:$port" --root "$dir/root" $BERTH_ARGS \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    PID=$!
    PIDS+=("$PID")
    for i in $(seq $((BENCH_START_TIMEOUT * 10))); do
        line=$(grep -m1 'registry listening' "$dir/stderr.log" 2>/dev/null)
        if [ -n "$line" ]; then
            ADDR=$(sed -E 's/\x1b\[[0-9;]*m//g' <<<"$line" | grep -oE 'addr=[^ ]+' | head -1 | cut -d= -f2 | tr -d '"')
            [[ "$ADDR" =~ ^[0-9a-zA-Z.:\[\]-]+:[0-9]+$ ]] || ADDR=127.0.0.1:$port
            return 0
        fi
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$PID" 2>/dev/null; then
        log "berth: no 'registry listening' line within ${BENCH_START_TIMEOUT}s"
    else
        wait "$PID"; log "berth: exited with status $? before listening"
    fi
    log "berth stderr: $(tail -c 600 "$dir/stderr.log" | tr '\n' ' ')"
    stop_pid "$PID"
    return 1
}

start_distribution() {
    local dir=$1 port i
    port=$(freeport) || return 1
    mkdir -p "$dir/root"
    cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $dir/root
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    "$DISTRIBUTION" serve "$dir/config.yml" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    PID=$!
    PIDS+=("$PID")
    ADDR=127.0.0.1:$port
    for i in $(seq $((BENCH_START_TIMEOUT * 10))); do
        [ "$(http_status "http://$ADDR/v2/")" = 200 ] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    log "distribution failed to start: $(tail -c 600 "$dir/stderr.log" | tr '\n' ' ')"
    stop_pid "$PID"
    return 1
}

# start_nginx DIR MANIFEST_FILE BLOB_FILE
start_nginx() {
    local dir=$1 mfile=$2 bfile=$3 port i www
    port=$(freeport) || return 1
    www="$dir/www"
    mkdir -p "$dir/logs" "$dir/tmp" "$www/v2/$REPO/manifests" "$www/v2/$REPO/blobs"
    cp "$mfile" "$www/v2/$REPO/manifests/$TAG"
    cp "$bfile" "$www/v2/$REPO/blobs/$BIG_DIGEST"
    chmod -R a+rX "$dir"
    cat >"$dir/nginx.conf" <<EOF
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 1024; }
http {
    types { }
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        root $www;
        add_header Docker-Distribution-API-Version registry/2.0 always;
        location = /v2/ { default_type application/json; return 200 '{}'; }
        location = /v2/$REPO/manifests/$TAG {
            default_type $MANIFEST_TYPE;
            add_header Docker-Content-Digest $MANIFEST_DIGEST;
            add_header Docker-Distribution-API-Version registry/2.0;
        }
        location = /v2/$REPO/blobs/$BIG_DIGEST {
            default_type application/octet-stream;
            add_header Docker-Content-Digest $BIG_DIGEST;
            add_header Docker-Distribution-API-Version registry/2.0;
        }
    }
}
EOF
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" -g 'daemon off;' \
        >"$dir/stdout.log" 2>"$dir/stderr.log" &
    PID=$!
    PIDS+=("$PID")
    ADDR=127.0.0.1:$port
    for i in $(seq $((BENCH_START_TIMEOUT * 10))); do
        [ "$(http_status "http://$ADDR/v2/")" = 200 ] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    log "nginx failed to start: $(cat "$dir/stderr.log" "$dir/logs/error.log" 2>/dev/null | tail -c 600 | tr '\n' ' ')"
    stop_pid "$PID"
    return 1
}

# ---------------------------------------------------------------- skopeo rounds
# push_pull SYSTEM ROUND: starts a fresh instance, pushes, pulls, verifies.
# Leaves the instance running with LIVE_PID_<sys>/LIVE_ADDR_<sys> set on success.
push_pull() {
    local sys=$1 round=$2 dir="$WORK/$1-r$2" cpu0 cpu1 t0 t1 t2 push_s pull_s out reason
    mkdir -p "$dir"
    if ! "start_$sys" "$dir"; then
        log "$sys: failed to start"
        printf -v "FAIL_$sys" '%s' "failed to start"
        result cpu_s "$sys" "" "failed to start"
        result push_s "$sys" "" "failed to start"
        result pull_s "$sys" "" "failed to start"
        return 1
    fi
    log "$sys round $round: pid $PID at $ADDR"
    local ref="docker://$ADDR/$REPO:$TAG"
    if ! cpu0=$(python3 "$LIB" cpu "$PID" 2>/dev/null); then
        log "$sys: process $PID exited right after start"
        for m in cpu_s push_s pull_s; do result "$m" "$sys" "" "exited after start"; done
        printf -v "FAIL_$sys" '%s' "exited after start"
        stop_pid "$PID"
        return 1
    fi
    t0=$(now)
    if ! skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
            "oci:$IMG:$TAG" "$ref" >"$dir/push.log" 2>&1; then
        log "$sys: push failed: $(tail -c 800 "$dir/push.log" | tr '\n' ' ')"
        reason=$(grep -v '^\s*$' "$dir/push.log" | tail -1 | sed -E 's/^time="[^"]*" level=[a-z]+ msg=//' | cut -c1-300)
        kill -0 "$PID" 2>/dev/null || reason="$reason (server process exited)"
        result push_s "$sys" "" "push failed: $reason"
        result pull_s "$sys" "" "not run (push failed)"
        result cpu_s "$sys" "" "push failed"
        printf -v "FAIL_$sys" '%s' "push failed"
        stop_pid "$PID"
        return 1
    fi
    t1=$(now)
    out="$dir/pulled"
    if ! skopeo --insecure-policy copy --quiet --preserve-digests --src-tls-verify=false \
            --dest-oci-accept-uncompressed-layers "$ref" "oci:$out:$TAG" >"$dir/pull.log" 2>&1; then
        log "$sys: pull failed: $(tail -c 800 "$dir/pull.log" | tr '\n' ' ')"
        result push_s "$sys" "$(elapsed "$t0" "$t1")"
        reason=$(grep -v '^\s*$' "$dir/pull.log" | tail -1 | sed -E 's/^time="[^"]*" level=[a-z]+ msg=//' | cut -c1-300)
        kill -0 "$PID" 2>/dev/null || reason="$reason (server process exited)"
        result pull_s "$sys" "" "pull failed: $reason"
        result cpu_s "$sys" "" "pull failed"
        printf -v "FAIL_$sys" '%s' "pull failed"
        stop_pid "$PID"
        return 1
    fi
    t2=$(now)
    if ! cpu1=$(python3 "$LIB" cpu "$PID" 2>/dev/null); then
        log "$sys: server process exited during the pull"
        result push_s "$sys" "$(elapsed "$t0" "$t1")"
        result pull_s "$sys" "" "server exited during pull"
        result cpu_s "$sys" "" "server exited"
        printf -v "FAIL_$sys" '%s' "server exited"
        stop_pid "$PID"
        return 1
    fi
    push_s=$(elapsed "$t0" "$t1")
    pull_s=$(elapsed "$t1" "$t2")
    local cpu_s
    cpu_s=$(elapsed "$cpu0" "$cpu1")
    if ! python3 "$LIB" verify-pull "$IMG" "$TAG" "$out" "$TAG" >"$dir/verify.log" 2>&1; then
        log "$sys: pulled image does not verify: $(cat "$dir/verify.log")"
        result push_s "$sys" "$push_s"
        result pull_s "$sys" "$pull_s" "pulled image corrupt: $(tail -1 "$dir/verify.log")"
        result cpu_s "$sys" "$cpu_s" "pulled image corrupt"
        printf -v "FAIL_$sys" '%s' "pulled image corrupt"
        rm -rf "$out"
        stop_pid "$PID"
        return 1
    fi
    rm -rf "$out"
    log "$sys round $round: push ${push_s}s pull ${pull_s}s registry CPU ${cpu_s}s ($(cat "$dir/verify.log"))"
    result push_s "$sys" "$push_s"
    result pull_s "$sys" "$pull_s"
    result cpu_s "$sys" "$cpu_s"
    printf -v "LIVE_PID_$sys" '%s' "$PID"
    printf -v "LIVE_ADDR_$sys" '%s' "$ADDR"
    printf -v "LIVE_DIR_$sys" '%s' "$dir"
    return 0
}

retire() {   # stop the live instance of SYSTEM (keep its logs, drop its storage)
    local sys=$1 pidv="LIVE_PID_$1" dirv="LIVE_DIR_$1"
    [ -n "${!pidv:-}" ] || return 0
    stop_pid "${!pidv}"
    rm -rf "${!dirv}/root"
    printf -v "LIVE_PID_$sys" '%s' ""
}

# ---------------------------------------------------------------- wrk
# run_wrk SYSTEM KIND URL CONNS BODY_BYTES SERVER_PID WARMUP_SECONDS
run_wrk() {
    local sys=$1 kind=$2 url=$3 conns=$4 body=$5 spid=$6 warm=$7 out="$WORK/wrk-$1-$2-r$ROUND.txt"
    local count=0 timeout=10 cpu0 cpu1 hdr=()
    if [ "$kind" = manifest ]; then count=1; hdr=(-H "Accept: $ACCEPT"); fi
    [ "$kind" = blob ] && timeout=60
    if [ "$warm" != 0 ]; then
        WRK_COUNT_STATUS=$count wrk -t"$WRK_THREADS" -c"$conns" -d"${warm}s" \
            --timeout "${timeout}s" -s "$HERE/count.lua" "${hdr[@]}" "$url" >"$out.warmup" 2>&1
    fi
    cpu0=$(python3 "$LIB" cpu "$spid" --tree 2>/dev/null)
    WRK_COUNT_STATUS=$count wrk -t"$WRK_THREADS" -c"$conns" -d"${BENCH_SECONDS}s" \
        --timeout "${timeout}s" -s "$HERE/count.lua" "${hdr[@]}" "$url" >"$out" 2>&1
    cpu1=$(python3 "$LIB" cpu "$spid" --tree 2>/dev/null)
    local line value note extra eff
    line=$(python3 "$LIB" wrk-result "$kind" "$body" "$out" "$cpu0" "$cpu1")
    IFS=$'\x1f' read -r value note extra eff <<<"$line"
    log "$sys $kind (round $ROUND): ${value:-none} ${note:-valid} ($extra)"
    if [ "$kind" = manifest ]; then
        result manifest_rps "$sys" "$value" "$note" "$extra"
        result manifest_cpu "$sys" "$eff" "$note"
    else
        result blob_MBps "$sys" "$value" "$note" "$extra"
        result blob_cpu "$sys" "$eff" "$note"
    fi
}

# precheck SYSTEM ADDR PATH: GET with curl; prints a note and fails unless 2xx and right bytes.
precheck() {
    local sys=$1 addr=$2 kind=$3 path want code
    if [ "$kind" = manifest ]; then path="/v2/$REPO/manifests/$TAG"; want=${MANIFEST_DIGEST#sha256:}
    else path="/v2/$REPO/blobs/$BIG_DIGEST"; want=${BIG_DIGEST#sha256:}; fi
    code=$(curl -s -o "$WORK/pre-$sys-$kind" -D "$WORK/pre-$sys-$kind.hdr" -w '%{http_code}' \
        --max-time 60 -H "Accept: $ACCEPT" "http://$addr$path")
    if [ "${code:0:1}" != 2 ]; then
        echo "GET $path: HTTP $code $(head -c 200 "$WORK/pre-$sys-$kind" | tr '\n' ' ')"; return 1
    fi
    if [ "$(sha256sum <"$WORK/pre-$sys-$kind" | cut -d' ' -f1)" != "$want" ]; then
        echo "GET $path: body does not match sha256:$want"; return 1
    fi
    if [ "$kind" = manifest ]; then
        local ctype
        ctype=$(grep -i '^content-type:' "$WORK/pre-$sys-$kind.hdr" | head -1 | cut -d' ' -f2- | tr -d '\r')
        [ "${ctype%%;*}" = "$MANIFEST_TYPE" ] ||
            echo "warning: manifest Content-Type is '$ctype', want $MANIFEST_TYPE" >&2
    fi
    rm -f "$WORK/pre-$sys-$kind"
    return 0
}

# ================================================================= main
log "work dir $WORK; $BENCH_ROUNDS skopeo round(s); $BENCH_WRK_ROUNDS wrk round(s) of ${BENCH_SECONDS}s (+${BENCH_WARMUP}s warm-up in the first)"
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
python3 -c "import sys; sys.exit(0 if float('$LOAD0') < 0.5 else 1)" ||
    log "warning: load average is $LOAD0 before starting; other work on this machine will skew the figures"

BERTH_OK=1
if [ ! -x "$BERTH" ]; then
    if [ "$BERTH" = "$ROOT/target/release/berth" ]; then
        log "building berth (cargo build --release)"
        (cd "$ROOT" && cargo build --release --bin berth) >"$WORK/cargo-build.log" 2>&1 ||
            log "cargo build failed: $(tail -3 "$WORK/cargo-build.log" | tr '\n' ' ')"
    fi
    if [ ! -x "$BERTH" ]; then log "berth: failed to start (no binary at $BERTH)"; BERTH_OK=0; fi
fi

make_image || { log "could not create the image: $(tail -5 "$WORK/fixture.log")"; exit 2; }
# shellcheck disable=SC1091
. "$WORK/image.env"
log "image ($(cat "$WORK/image.source")): $LAYER_COUNT layers, $((LAYER_BYTES / 1000000)) MB, types $LAYER_TYPES, manifest $MANIFEST_DIGEST"
[ "$LAYER_BYTES" -ge 300000000 ] || log "warning: image is smaller than 300 MB"
result meta image_source "$(cat "$WORK/image.source")"
result meta image_bytes "$LAYER_BYTES"
result meta image_layers "$LAYER_COUNT"
result meta wrk_seconds "$BENCH_SECONDS"
result meta rounds "$BENCH_ROUNDS"
result meta wrk_rounds "$BENCH_WRK_ROUNDS"
result meta loadavg_start "$LOAD0"
result meta cpus "$(nproc)"
result meta berth_rust_log "$BERTH_RUST_LOG"

# (a) + (d): skopeo push and pull, alternating which registry goes first.
SYSTEMS_LIVE=(berth distribution)
[ "$BERTH_OK" = 1 ] || {
    for m in cpu_s push_s pull_s manifest_rps blob_MBps; do result "$m" berth "" "failed to start (no binary)"; done
    SYSTEMS_LIVE=(distribution)
}
for round in $(seq "$BENCH_ROUNDS"); do
    order=("${SYSTEMS_LIVE[@]}")
    if [ $((round % 2)) = 0 ] && [ ${#order[@]} = 2 ]; then order=("${order[1]}" "${order[0]}"); fi
    for sys in "${order[@]}"; do
        retire "$sys"
        if ! push_pull "$sys" "$round"; then
            # one failure is enough: don't keep hammering a broken server
            log "$sys: giving up on further rounds"
            SYSTEMS_LIVE=("${SYSTEMS_LIVE[@]/$sys/}")
        fi
    done
    tmp=(); for s in "${SYSTEMS_LIVE[@]}"; do [ -n "$s" ] && tmp+=("$s"); done
    SYSTEMS_LIVE=("${tmp[@]}")
done

# (b) + (c): wrk against the last instance of each registry and against nginx.
NGX_DIR="$WORK/nginx"
mkdir -p "$NGX_DIR"
# nginx serves exactly the bytes the registries hold: the manifest as fetched
# back from a registry (checked against the pushed digest) and the largest layer.
mref="$MANIFEST_PATH"
for sys in distribution berth; do
    a="LIVE_ADDR_$sys"; p="LIVE_PID_$sys"
    [ -n "${!p:-}" ] || continue
    if curl -sf -o "$WORK/manifest-$sys" -H "Accept: $ACCEPT" "http://${!a}/v2/$REPO/manifests/$TAG" &&
        [ "$(sha256sum <"$WORK/manifest-$sys" | cut -d' ' -f1)" = "${MANIFEST_DIGEST#sha256:}" ]; then
        mref="$WORK/manifest-$sys"; break
    fi
done
NGINX_OK=1
start_nginx "$NGX_DIR" "$mref" "$BIG_PATH" || NGINX_OK=0
[ "$NGINX_OK" = 1 ] && { LIVE_PID_nginx=$PID; LIVE_ADDR_nginx=$ADDR; log "nginx: pid $PID at $ADDR"; }

# Round-robin: every round runs each server once per workload, rotating the order,
# so drift in the machine's load hits all three alike; the report takes medians.
declare -A SKIP=()
for sys in nginx distribution berth; do
    p="LIVE_PID_$sys"; a="LIVE_ADDR_$sys"
    for kind in manifest blob; do
        m=manifest_rps; [ "$kind" = blob ] && m=blob_MBps
        if [ -z "${!p:-}" ]; then
            f="FAIL_$sys"
            case $sys in
                berth) [ "$BERTH_OK" = 1 ] && result "$m" berth "" "not run (${!f:-no instance})";;
                nginx) result "$m" nginx "" "failed to start";;
                *) result "$m" "$sys" "" "not run (${!f:-no instance})";;
            esac
            SKIP[$sys-$kind]=1
        elif ! note=$(precheck "$sys" "${!a}" "$kind"); then
            log "$sys $kind precheck failed: $note"
            result "$m" "$sys" "" "precheck: $note"
            SKIP[$sys-$kind]=1
        fi
    done
done
ORDER=(nginx distribution berth)
for ROUND in $(seq "$BENCH_WRK_ROUNDS"); do
    warm=0; [ "$ROUND" = 1 ] && warm=$BENCH_WARMUP
    for kind in manifest blob; do
        if [ "$kind" = manifest ]; then conns=$MANIFEST_CONNS; body=$MANIFEST_SIZE; path="/v2/$REPO/manifests/$TAG"
        else conns=$BLOB_CONNS; body=$BIG_SIZE; path="/v2/$REPO/blobs/$BIG_DIGEST"; fi
        for sys in "${ORDER[@]}"; do
            [ -z "${SKIP[$sys-$kind]:-}" ] || continue
            p="LIVE_PID_$sys"; a="LIVE_ADDR_$sys"
            run_wrk "$sys" "$kind" "http://${!a}$path" "$conns" "$body" "${!p}" "$warm"
        done
    done
    ORDER=("${ORDER[1]}" "${ORDER[2]}" "${ORDER[0]}")
done

# Server-side errors logged during the run, for the record.
for d in "$WORK"/berth-r*; do
    [ -s "$d/stderr.log" ] || continue
    n=$(grep -ciE 'error|panic|warn' "$d/stderr.log")
    [ "$n" = 0 ] || log "berth $(basename "$d"): $n error/warn/panic lines in stderr, first: $(grep -iE -m1 'error|panic|warn' "$d/stderr.log" | cut -c1-300)"
done

result meta loadavg_end "$(cut -d' ' -f1 /proc/loadavg)"
echo
echo "Registry benchmark: image of $LAYER_COUNT layers, $((LAYER_BYTES / 1000000)) MB ($(cat "$WORK/image.source")), blob GETs on a $((BIG_SIZE / 1000000)) MB layer, medians of $BENCH_ROUNDS skopeo and $BENCH_WRK_ROUNDS x ${BENCH_SECONDS}s wrk round(s), $(nproc) CPUs, load $LOAD0 at start"
python3 "$LIB" report "$RESULTS" ${BENCH_JSON:+"$BENCH_JSON"}
rc=$?
if [ "$BENCH_STRICT" = 1 ]; then exit "$rc"; fi
exit 0

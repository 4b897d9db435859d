#!/usr/bin/env bash
# Load comparison on loopback: a trivial upstream (nginx `return 200 "ok\n"`) driven
#   1. directly,
#   2. through nginx as a keepalive reverse proxy,
#   3. through the gateway (one `/*` route, auth: none),
# with the same wrk command, then prints requests/s, p50, p99 and the gateway/nginx ratio.
#
# Usage: benches/load.sh            (from anywhere; see benches/README.md)
# Environment (all optional):
#   DURATION=10       seconds per measured run
#   CONNECTIONS=64    wrk connections
#   WRK_THREADS=2     wrk threads
#   WARMUP=3          seconds of warm-up before each measured run (0: none)
#   PROXY_THREADS=2   nginx proxy worker_processes and gateway `threads:`
#   UPSTREAM_WORKERS=1  worker_processes of the upstream nginx
#   GATEWAY_LOG_LEVEL=warn  the gateway's `log.level` (info writes one access-log line per request)
#   SKIP_BUILD=1      do not run `cargo build --release` (use the existing binary)
#   GATEWAY_BIN=PATH  measure this gateway binary instead of target/release/gateway (no build)
#   KEEP_TMP=1        keep the temp dir (configs, logs) for inspection
#
# Every process it starts runs in the foreground of a child (nginx with `daemon off;`), is
# recorded by pid and stopped on exit. Everything listens on 127.0.0.1 only.

set -euo pipefail

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
WARMUP=${WARMUP:-3}
PROXY_THREADS=${PROXY_THREADS:-2}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}
GATEWAY_LOG_LEVEL=${GATEWAY_LOG_LEVEL:-warn}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${GATEWAY_BIN:-}" ]; then
    SKIP_BUILD=1   # an explicit binary is used as it is
else
    GATEWAY_BIN="$ROOT/target/release/gateway"
fi

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root or sudo to run: $*"
    fi
}

find_nginx() {
    if command -v nginx >/dev/null 2>&1; then command -v nginx
    elif [ -x /usr/sbin/nginx ]; then echo /usr/sbin/nginx
    else return 1
    fi
}

missing=()
find_nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(find_nginx) || die "nginx not found after install"
command -v cargo >/dev/null 2>&1 || [ -n "${SKIP_BUILD:-}" ] || die "cargo not found"

# ---------------------------------------------------------------- processes and cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gateway-load.XXXXXX")
PIDS=()
EXTRA_FILES=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do   # at most 5 s each, then SIGKILL
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pid $pid did not stop on SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    rm -f "${EXTRA_FILES[@]}" 2>/dev/null || true
    if [ -n "${KEEP_TMP:-}" ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port on 127.0.0.1 that nothing listens on and that this script has not handed out yet.
USED_PORTS=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 40000))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS="$USED_PORTS$p "
            echo "$p"
            return 0
        fi
    done
    die "no free port found"
}

# Waits (at most $3 seconds) until URL $1 answers 200, while process $2 is alive.
wait_200() {
    local url=$1 pid=$2 limit=$3
    for _ in $(seq 1 $((limit * 10))); do
        kill -0 "$pid" 2>/dev/null || return 1
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" || true)" = 200 ]; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# CPU time (clock ticks, user+system, all threads) of process $1 and its direct children.
proc_ticks() {
    local root=$1 total=0 f line pid rest
    local -a fields
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        pid=${line%% *}
        rest=${line##*) }          # fields after "pid (comm) ": state ppid ... utime stime
        read -r -a fields <<<"$rest"
        if [ "$pid" = "$root" ] || [ "${fields[1]}" = "$root" ]; then
            total=$((total + fields[11] + fields[12]))
        fi
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

# Temp-path directives so nginx never touches /var/lib/nginx (may be unwritable or shared).
nginx_temp_paths() {
    local dir=$1 v
    v=$("$NGINX" -V 2>&1)
    echo "client_body_temp_path $dir/tmp/body;"
    echo "proxy_temp_path $dir/tmp/proxy;"
    local m
    for m in fastcgi uwsgi scgi; do
        case "$v" in *"--without-http_${m}_module"*) ;; *) echo "${m}_temp_path $dir/tmp/$m;" ;; esac
    done
}

start_nginx() {   # $1: dir holding nginx.conf
    local dir=$1
    mkdir -p "$dir/tmp" "$dir/logs"
    "$NGINX" -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -t -q \
        || die "nginx config test failed for $dir (see $dir/logs/error.log)"
    "$NGINX" -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -g 'daemon off;' \
        >"$dir/logs/stdout.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

# ---------------------------------------------------------------- 1. build
if [ -z "${SKIP_BUILD:-}" ]; then
    log "cargo build --release (timeout ${BUILD_TIMEOUT}s)"
    (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release --quiet --bin gateway) \
        || die "cargo build --release failed"
fi
[ -x "$GATEWAY_BIN" ] || die "$GATEWAY_BIN not found"

# When run as root, nginx workers run as an unprivileged user: let them traverse the temp dir.
[ "$(id -u)" -eq 0 ] && chmod 755 "$TMP"

UP_PORT=$(free_port)
NGINX_PORT=$(free_port)
GW_PORT=$(free_port)
ADMIN_PORT=$(free_port)

# ---------------------------------------------------------------- 2. upstream
mkdir -p "$TMP/upstream"
cat >"$TMP/upstream/nginx.conf" <<EOF
worker_processes $UPSTREAM_WORKERS;
pid $TMP/upstream/nginx.pid;
error_log $TMP/upstream/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    default_type text/plain;
    $(nginx_temp_paths "$TMP/upstream")
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { return 200 "ok\n"; }
    }
}
EOF
start_nginx "$TMP/upstream"
UP_PID=$LAST_PID

# ---------------------------------------------------------------- 3. nginx reverse proxy
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes $PROXY_THREADS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    $(nginx_temp_paths "$TMP/nginx")
    upstream origin {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Roughly the forwarding headers the gateway adds, so both do similar work.
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOF
start_nginx "$TMP/nginx"
NGINX_PID=$LAST_PID

# ---------------------------------------------------------------- 4. gateway
mkdir -p "$TMP/gateway/policies"
cat >"$TMP/gateway/gateway.yaml" <<EOF
listeners:
  - name: public
    bind: 127.0.0.1:$GW_PORT
admin:
  bind: 127.0.0.1:$ADMIN_PORT
policies: policies/
threads: $PROXY_THREADS
log: { level: $GATEWAY_LOG_LEVEL, format: json }
shutdown_grace: 1s
EOF
cat >"$TMP/gateway/policies/bench.yaml" <<EOF
upstreams:
  origin:
    targets: ["127.0.0.1:$UP_PORT"]
    timeouts: { connect: 1s, read: 5s }
routes:
  - name: all
    match: { path: "/*" }
    auth: none
    upstream: origin
EOF
# The gateway writes its pid file and upgrade socket under /tmp, named by listener port.
EXTRA_FILES+=("/tmp/gateway-$GW_PORT.pid" "/tmp/gateway-upgrade-$GW_PORT.sock")
"$GATEWAY_BIN" check -c "$TMP/gateway/gateway.yaml" >&2 || die "gateway check failed"
# RUST_LOG would override the configured level; make sure it does not. The log goes to a
# directory of its own: the gateway watches the directory of gateway.yaml for changes, and a
# log file written there would wake its reload watcher on every line.
mkdir -p "$TMP/gateway-logs"
env -u RUST_LOG "$GATEWAY_BIN" run -c "$TMP/gateway/gateway.yaml" \
    >"$TMP/gateway-logs/stdout.log" 2>"$TMP/gateway-logs/stderr.log" &
PIDS+=($!)
GW_PID=$!

# ---------------------------------------------------------------- readiness
wait_200 "http://127.0.0.1:$UP_PORT/" "$UP_PID" 15 \
    || { cat "$TMP/upstream/logs/error.log" >&2 || true; die "upstream nginx did not start"; }
wait_200 "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID" 15 \
    || { cat "$TMP/nginx/logs/error.log" >&2 || true; die "proxy nginx did not start"; }
wait_200 "http://127.0.0.1:$ADMIN_PORT/readyz" "$GW_PID" 30 \
    || { tail -n 20 "$TMP/gateway-logs/stdout.log" "$TMP/gateway-logs/stderr.log" >&2 || true; die "gateway not ready"; }
for port in "$UP_PORT" "$NGINX_PORT" "$GW_PORT"; do
    body=$(curl -s --max-time 2 "http://127.0.0.1:$port/bench") || die "no answer on port $port"
    [ "$body" = ok ] || die "unexpected answer on port $port: $body"
done
log "ready: upstream :$UP_PORT, nginx :$NGINX_PORT, gateway :$GW_PORT (admin :$ADMIN_PORT)"

# ---------------------------------------------------------------- 5. load
to_ms() {   # wrk latency such as 812.00us, 1.23ms, 2.01s -> milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%s", v }'
}

declare -A RPS P50 P99 ERRS CPU CPU_US
run_one() {   # $1: name, $2: port, $3: pid of the server process under test
    local name=$1 port=$2 pid=$3 url="http://127.0.0.1:$2/bench" out t0 t1
    if [ "$WARMUP" -gt 0 ]; then
        log "$name: warm-up ${WARMUP}s"
        timeout $((WARMUP + 30)) wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "$url" >/dev/null
    fi
    log "$name: wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --latency $url"
    t0=$(proc_ticks "$pid")
    out=$(timeout $((DURATION + 30)) wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url") \
        || die "wrk failed against $name"
    t1=$(proc_ticks "$pid")
    printf '%s\n' "$out" >"$TMP/wrk-$name.txt"
    [ -n "${VERBOSE:-}" ] && printf '%s\n' "$out" >&2
    RPS[$name]=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    P50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    P99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    local non2xx sockerr
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
    sockerr=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' <<<"$out")
    ERRS[$name]=$(( ${non2xx:-0} + ${sockerr:-0} ))
    [ -n "${RPS[$name]}" ] || die "could not parse wrk output for $name"
    # CPU used by the server under test, in percent of one core over the measured run ...
    CPU[$name]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$DURATION" 'BEGIN { printf "%.0f", 100 * d / hz / s }')
    # ... and per request, in microseconds of CPU.
    CPU_US[$name]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$DURATION" -v r="${RPS[$name]}" \
        'BEGIN { printf "%.1f", (r > 0) ? 1e6 * d / hz / (r * s) : 0 }')
}

run_one direct "$UP_PORT" "$UP_PID"
run_one nginx "$NGINX_PORT" "$NGINX_PID"
run_one gateway "$GW_PORT" "$GW_PID"

kill -0 "$GW_PID" 2>/dev/null || die "gateway exited during the run"
GW_LOG_LINES=$(cat "$TMP/gateway-logs/stdout.log" "$TMP/gateway-logs/stderr.log" | wc -l)
GW_COUNTED=$(curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" \
    | awk '/^gateway_requests_total\{/ && /route="all"/ { s += $NF } END { printf "%.0f", s }')

# ---------------------------------------------------------------- 6. report
echo
echo "gateway load comparison — $(date -u '+%Y-%m-%dT%H:%M:%SZ'), $(uname -m), nproc=$(nproc)"
echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --latency (warm-up ${WARMUP}s); proxies: $PROXY_THREADS workers/threads; upstream: nginx, $UPSTREAM_WORKERS worker(s)"
echo
printf '%-8s %12s %10s %10s %8s %12s %14s\n' target "requests/s" "p50 ms" "p99 ms" errors "server CPU%" "CPU us/request"
printf '%-8s %12s %10s %10s %8s %12s %14s\n' -------- ------------ ---------- ---------- -------- ------------ --------------
for name in direct nginx gateway; do
    printf '%-8s %12.0f %10.3f %10.3f %8s %12s %14s\n' "$name" "${RPS[$name]}" "${P50[$name]}" "${P99[$name]}" \
        "${ERRS[$name]}" "${CPU[$name]}" "${CPU_US[$name]}"
done
echo
awk -v g="${RPS[gateway]}" -v n="${RPS[nginx]}" -v d="${RPS[direct]}" 'BEGIN {
    printf "gateway/nginx requests/s ratio: %.2f\n", g / n
    printf "gateway/direct requests/s ratio: %.2f   nginx/direct: %.2f\n", g / d, n / d }'
echo "server CPU% = CPU time of the process under test (all threads/workers) / wall time, 100 = one core;"
echo "  direct = the upstream nginx; nginx and gateway = the proxy only (the upstream's CPU is not included)"
echo "gateway: $GW_COUNTED requests counted by gateway_requests_total{route=\"all\"}; $GW_LOG_LINES log lines written at level $GATEWAY_LOG_LEVEL"

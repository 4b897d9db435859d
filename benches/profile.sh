#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: the repeatable figure behind the
# hot-path changes (valgrind counts instructions, not seconds, so the same binary and
# inputs give the same count whatever else the machine is doing).
#
# Four rows are profiled in turn (three processes), each in front of the same upstream (nginx,
# `return 200 "ok\n"`), each with one keep-alive client connection:
#   bare       examples/bare_pingora.rs: Pingora's proxy with nothing of the gateway (the floor),
#              built by benches/floor/ against Pingora as published (BARE_BIN=target/release/
#              examples/bare_pingora: the same proxy on the gateway's patched Pingora, vendor/)
#   plain      the gateway, one `/*` route, `auth: none` (GET /bench)
#   jwt        the gateway, GET /jwt: RS256 JWT and a rate limit by consumer (peers.sh's JWT row)
#   policy     the gateway, POST /orders: RS256 JWT, a rate limit by consumer, a JSON Schema
#              check of benches/fixtures/order-1k.json (the full-policy route of load.sh)
# For each: WARM requests, then the counters are zeroed (`callgrind_control -z`), N
# requests, a dump (`callgrind_control -d`); the total divided by N is printed.
#
# Usage: benches/profile.sh            (needs valgrind, nginx, python3, curl)
# Environment: N=2000 requests counted, WARM=200, LOG_LEVEL=warn (info: with the access log), SKIP_BUILD=1 (use the existing release
# binaries), KEEP=1 (keep the callgrind files for `callgrind_annotate --inclusive=yes FILE`),
# ROWS="bare plain jwt policy" (which of the four to measure).

set -euo pipefail

N=${N:-2000}
# The access log: `warn` leaves it off (the floor comparison), `info` writes a line a request.
LOG_LEVEL=${LOG_LEVEL:-warn}
WARM=${WARM:-200}
ROWS=${ROWS:-bare plain jwt policy}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GATEWAY="$ROOT/target/release/gateway"
BARE=${BARE_BIN:-$ROOT/target/floor/release/bare_pingora}
FIX="$ROOT/benches/fixtures"
KEYS="$ROOT/tests/fixtures/keys"

log() { printf '[profile] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in valgrind callgrind_control python3 curl; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (apt-get install valgrind python3 curl)"
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || die "nginx not found (apt-get install nginx-light)"

if [ -z "${SKIP_BUILD:-}" ]; then
    log "cargo build --release --bin gateway --example bare_pingora; the floor (benches/floor)"
    (cd "$ROOT" && cargo build --release --quiet --bin gateway --example bare_pingora \
        && cargo build --release --quiet --manifest-path benches/floor/Cargo.toml --target-dir target/floor) \
        || die "build failed"
fi
if [ ! -x "$GATEWAY" ] || [ ! -x "$BARE" ]; then die "release binaries not found (run without SKIP_BUILD)"; fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gateway-profile.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -f /tmp/bare-pingora-*.pid /tmp/bare-pingora-*.sock "/tmp/gateway-${GW_PORT:-none}.pid" \
        "/tmp/gateway-upgrade-${GW_PORT:-none}.sock" 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
[ "$(id -u)" -eq 0 ] && chmod 755 "$TMP"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port)
GW_PORT=$(free_port)
ADMIN_PORT=$(free_port)
BARE_PORT=$(free_port)

# ---------------------------------------------------------------- upstream
mkdir -p "$TMP/upstream/logs" "$TMP/upstream/tmp"
cat >"$TMP/upstream/nginx.conf" <<EOF
worker_processes 1;
pid $TMP/upstream/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $TMP/upstream/tmp;
    server {
        listen 127.0.0.1:$UP_PORT;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
EOF
"$NGINX" -p "$TMP/upstream" -e "$TMP/upstream/logs/error.log" -c "$TMP/upstream/nginx.conf" \
    -g 'daemon off;' >/dev/null 2>&1 &
PIDS+=($!)

# ---------------------------------------------------------------- gateway configuration
mkdir -p "$TMP/gw/policies/keys" "$TMP/gw/policies/schemas"
cp "$KEYS/test-only-rsa-1.pub.pem" "$TMP/gw/policies/keys/bench-rsa.pub.pem"
cp "$FIX/order-schema.json" "$TMP/gw/policies/schemas/order.json"
cat >"$TMP/gw/gateway.yaml" <<EOF
listeners:
  - name: public
    bind: 127.0.0.1:$GW_PORT
admin:
  bind: 127.0.0.1:$ADMIN_PORT
policies: policies/
threads: 2
log: { level: $LOG_LEVEL, format: json }
shutdown_grace: 1s
EOF
sed "s/@UPSTREAM@/127.0.0.1:$UP_PORT/" "$ROOT/benches/fixtures/bench.yaml" >"$TMP/gw/policies/bench.yaml"
cp "$FIX/policy.yaml" "$TMP/gw/policies/policy.yaml"
"$GATEWAY" check -c "$TMP/gw/gateway.yaml" >&2 || die "gateway check failed"
TOKEN=$("$GATEWAY" token -c "$TMP/gw/gateway.yaml" --provider bench --sub bench-user \
    --kid bench-rsa --key "$KEYS/test-only-rsa-1.key.pem" --alg RS256 --ttl 1h) || die "token failed"

# ---------------------------------------------------------------- client
# N requests on one keep-alive connection; exits non-zero if any answer is not 200.
cat >"$TMP/client.py" <<'PY'
import http.client, sys
port, n, method, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
body = open(sys.argv[5], "rb").read() if len(sys.argv) > 5 and sys.argv[5] else None
headers = {"Content-Type": "application/json"} if body is not None else {}
if len(sys.argv) > 6:
    headers["Authorization"] = "Bearer " + sys.argv[6]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
bad = 0
for _ in range(n):
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    r.read()
    bad += r.status != 200
if bad:
    sys.exit(f"{bad} of {n} answers were not 200")
PY

# ---------------------------------------------------------------- measure
declare -A IR
measure() {   # $1: name, $2: port, $3: method, $4: path, $5: body file or "", $6: token or ""; then: command
    local name=$1 port=$2 method=$3 path=$4 body=$5 token=$6 pid file total
    shift 6
    log "$name: starting under callgrind"
    valgrind --tool=callgrind --callgrind-out-file="$TMP/callgrind.$name.%p" "$@" \
        >"$TMP/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { tail -n 20 "$TMP/$name.log" >&2; die "$name exited"; }
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/bench" || true)" = 200 ] && break
        sleep 0.2
    done
    python3 "$TMP/client.py" "$port" "$WARM" "$method" "$path" "$body" "$token" || die "$name: warm-up failed"
    callgrind_control -z "$pid" >/dev/null 2>&1
    python3 "$TMP/client.py" "$port" "$N" "$method" "$path" "$body" "$token" || die "$name: run failed"
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    file="$TMP/callgrind.$name.$pid.1"
    [ -r "$file" ] || die "$name: no callgrind dump $file"
    total=$(awk '/^(summary|totals):/ { print $2; exit }' "$file")
    IR[$name]=$((total / N))
    log "$name: $((total / N)) instructions per request ($file)"
}

want() { case " $ROWS " in *" $1 "*) return 0 ;; esac; IR[$1]=0; return 1; }
want bare && measure bare "$BARE_PORT" GET /bench "" "" "$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT" 2
want plain && measure plain "$GW_PORT" GET /bench "" "" "$GATEWAY" run -c "$TMP/gw/gateway.yaml"
want jwt && measure jwt "$GW_PORT" GET /jwt "" "$TOKEN" "$GATEWAY" run -c "$TMP/gw/gateway.yaml"
want policy && measure policy "$GW_PORT" POST /orders "$FIX/order-1k.json" "$TOKEN" "$GATEWAY" run -c "$TMP/gw/gateway.yaml"

echo
echo "callgrind: instructions per request — $(date -u '+%Y-%m-%dT%H:%M:%SZ'), $(uname -m), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "(N=$N requests on one keep-alive connection after $WARM warm-up; all threads of the process)"
printf '  %-34s %9s\n' "bare Pingora proxy (the floor)" "${IR[bare]}"
printf '  %-34s %9s   (+%s over the floor)\n' "gateway, plain route" "${IR[plain]}" $((IR[plain] - IR[bare]))
printf '  %-34s %9s   (+%s over the plain route)\n' "gateway, JWT + limit (GET)" "${IR[jwt]}" $((IR[jwt] - IR[plain]))
printf '  %-34s %9s   (+%s over the plain route)\n' "gateway, full policy (1 KiB body)" "${IR[policy]}" $((IR[policy] - IR[plain]))

#!/usr/bin/env bash
# Property-based tests of the demo against its own OpenAPI export, with Schemathesis:
# starts `gateway demo` from the repository root (fixed ports 8080, 8443, 9901, 9001-9003:
# nothing else may use them, tests/demo.rs included), exports the document with `gateway
# openapi export`, and runs Schemathesis against http://127.0.0.1:8080 with a bounded
# number of examples per operation, the demo API key and a demo JWT for protected routes.
# Not part of CI (it needs PyPI and takes a few minutes); findings are listed at the end.
#
#   bash scripts/schemathesis.sh                 # debug build, 20 examples per operation
#   PROFILE=release EXAMPLES=50 bash scripts/schemathesis.sh
#
# Schemathesis is installed (pinned) in a virtual environment under target/; its report
# and the gateway's log go to target/schemathesis/.
#
# Left out on purpose: the demo routes `dead` (502), `fail` (the upstream's 500) and `slow`
# (504 past its 1 s read timeout) fail by design; `live-echo` is a WebSocket (its upstream
# answers a plain GET with 426); and the `unsupported_method` check, since a route without
# `methods` takes any method while the document lists GET, POST, PUT, PATCH and DELETE
# (SPEC), so TRACE there is not a 405.
# Expect now and then: POST /v1/orders 422 `idempotency_key_reused` when Schemathesis sends
# one Idempotency-Key with two bodies (the contract's answer; the check calls it a rejection).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=4.32.5
PROFILE=${PROFILE:-debug}
EXAMPLES=${EXAMPLES:-20}
# The whole Schemathesis run is cut at this many seconds.
BUDGET=${BUDGET:-150}
VENV=target/schemathesis-venv
OUT=target/schemathesis
GW=http://127.0.0.1:8080
ADMIN=http://127.0.0.1:9901

mkdir -p "$OUT"
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "installing schemathesis $VERSION in $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$VERSION"
fi

if [ "$PROFILE" = release ]; then
  cargo build --quiet --release --bin gateway
else
  cargo build --quiet --bin gateway
fi
BIN=target/$PROFILE/gateway

if curl -s -o /dev/null "$ADMIN/healthz" || curl -s -o /dev/null "$GW/"; then
  echo "something already listens on :8080 or :9901 (another demo, tests/demo.rs?): stop it first" >&2
  exit 1
fi

# The demo's own settings: no admin token, the demo webhook secret.
env -u GATEWAY_ADMIN_TOKEN -u DEMO_WEBHOOK_SECRET "$BIN" demo >"$OUT/gateway.log" 2>&1 &
DEMO=$!
trap 'kill "$DEMO" 2>/dev/null; wait "$DEMO" 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  curl -sf -o /dev/null "$ADMIN/readyz" && break
  kill -0 "$DEMO" 2>/dev/null || { echo "gateway demo exited; see $OUT/gateway.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf -o /dev/null "$ADMIN/readyz" || { echo "gateway demo not ready; see $OUT/gateway.log" >&2; exit 1; }

"$BIN" openapi export -c gateway.yaml -o "$OUT/openapi.json"
# The admin endpoint must serve the same document as the command line.
curl -sf "$ADMIN/openapi.json" | python3 -c '
import json, sys
served = json.load(sys.stdin)
exported = json.load(open(sys.argv[1]))
sys.exit(0 if served == exported else "GET /openapi.json differs from gateway openapi export")
' "$OUT/openapi.json"

TOKEN=$("$BIN" token -c gateway.yaml --provider demo --sub alice --scope orders:read --ttl 1h)
# Credentials by security scheme name (components.securitySchemes of the export).
cat >"$OUT/schemathesis.toml" <<EOF
[auth.openapi."api_key"]
api_key = "demo-acme-key"
[auth.openapi."api_key.query"]
api_key = "demo-acme-key"
[auth.openapi."jwt.demo"]
bearer = "$TOKEN"
EOF

set +e
timeout "$BUDGET" "$VENV/bin/st" --config-file "$OUT/schemathesis.toml" run "$OUT/openapi.json" \
  --url "$GW" \
  --max-examples "$EXAMPLES" \
  --checks all \
  --exclude-checks unsupported_method \
  --exclude-operation-id dead --exclude-operation-id fail --exclude-operation-id slow \
  --exclude-operation-id live-echo \
  --workers 2 \
  --request-timeout 5 \
  --seed 1 \
  --no-color \
  --report junit,ndjson --report-dir "$OUT/report" \
  2>&1 | tee "$OUT/schemathesis.log"
status=${PIPESTATUS[0]}
set -e
if grep -q 'panicked' "$OUT/gateway.log"; then
  echo "the gateway panicked during the run: see $OUT/gateway.log" >&2
  status=1
fi
if ! kill -0 "$DEMO" 2>/dev/null; then
  echo "the gateway exited during the run: see $OUT/gateway.log" >&2
  status=1
fi
echo "schemathesis exit status: $status (124: the ${BUDGET}s budget ran out); log: $OUT/schemathesis.log" >&2
exit "$status"

#!/usr/bin/env bash
# Installs the system packages the build and the tests need, when they are missing:
# cmake (Pingora's zlib-ng), redis-server (the Redis tests and benches start their own),
# chromium (the browser tests). Idempotent; uses sudo only when not root.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
updated=""
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  $SUDO apt-get update -qq
  updated=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The OpenAPI export test (tests/openapi_export.rs) checks the document with this validator.
# (Debian's own Python refuses plain pip installs, PEP 668: hence the second try.)
python3 -c 'import openapi_spec_validator' >/dev/null 2>&1 \
  || python3 -m pip install --quiet openapi-spec-validator==0.9.0 \
  || python3 -m pip install --quiet --break-system-packages openapi-spec-validator==0.9.0
# The browser tests (tests/cors.rs, tests/console.rs) drive headless Chromium: Debian's
# `chromium` package (Ubuntu ships it only as a snap: install that by hand there). Without
# it those tests fail, saying so.
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing: chromium" >&2
  [ -n "$updated" ] || $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

#!/usr/bin/env bash
# Installs the system packages the build and the tests need, when they are missing:
# cmake (Pingora's zlib-ng), redis-server (the Redis tests and benches start their own),
# chromium (the CORS browser test). Idempotent; uses sudo only when not root.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
updated=""
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  $SUDO apt-get update -qq
  updated=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The CORS browser test (tests/cors.rs) drives headless Chromium: Debian's `chromium`
# package. Where it cannot be installed (Ubuntu ships it as a snap), that one test says so
# and skips; everything else still runs.
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing: chromium" >&2
  [ -n "$updated" ] || $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null 2>&1 \
    || echo "warning: chromium could not be installed; the CORS browser test will skip" >&2
fi

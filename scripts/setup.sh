#!/usr/bin/env bash
# Installs the system packages the build and the tests need, when they are missing:
# cmake (Pingora's zlib-ng), redis-server (the Redis tests and benches start their own),
# chromium (the CORS browser test). Idempotent; uses sudo only when not root.
set -euo pipefail
need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The CORS browser test (tests/cors.rs) drives headless Chromium.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing: ${need[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

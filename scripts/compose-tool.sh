#!/usr/bin/env bash
# Ensure Debian's docker-compose is installed: tests/test_deployment.py validates
# docker-compose.yml with it (it parses the file; it starts nothing).
set -euo pipefail
if command -v docker-compose >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "compose-tool: ERROR: docker-compose is missing and not root to install it (apt-get install docker-compose)" >&2
  exit 1
fi
echo "compose-tool: installing Debian's docker-compose package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq docker-compose >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq docker-compose >/dev/null; }
command -v docker-compose >/dev/null 2>&1 || { echo "compose-tool: ERROR: install failed" >&2; exit 1; }

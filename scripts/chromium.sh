#!/usr/bin/env bash
# Ensure Debian's Chromium is installed for the browser tests (Playwright drives it; it never
# downloads a browser of its own).
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "chromium: ERROR: /usr/bin/chromium is missing and not root to install it (apt-get install chromium)" >&2
  exit 1
fi
echo "chromium: installing Debian's chromium package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }
command -v chromium >/dev/null 2>&1 || { echo "chromium: ERROR: install failed" >&2; exit 1; }

#!/usr/bin/env bash
# The browser tests drive Debian's Chromium through the playwright package (never
# `playwright install`). Install it when missing and we may (root); else say how.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing Debian's chromium for the browser tests"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
  echo "error: the browser tests need Chromium: sudo apt-get install chromium" >&2
  exit 1
fi

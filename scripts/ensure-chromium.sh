#!/usr/bin/env bash
# Makes sure Debian's Chromium is installed (/usr/bin/chromium): the Web UI test drives it headless
# through playwright-core, which downloads no browser of its own.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: missing chromium; install it with your package manager (Debian: sudo apt-get install -y --no-install-recommends chromium)" >&2
  exit 1
fi
echo "ensure-chromium: installing chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends chromium >&2

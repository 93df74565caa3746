#!/usr/bin/env bash
# Makes sure QEMU's system emulator and tools are installed (Debian's qemu-system-x86, qemu-utils).
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
{ command -v qemu-img >/dev/null 2>&1 && command -v qemu-io >/dev/null 2>&1; } || need+=(qemu-utils)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-qemu: missing ${need[*]}; install them with your package manager (Debian: sudo apt-get install -y --no-install-recommends ${need[*]})" >&2
  exit 1
fi
echo "ensure-qemu: installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${need[@]}" >&2

#!/usr/bin/env bash
# Prints the directory of the lab's guest OS (vmlinuz, initramfs.cpio, guest.json), building it once
# into a per-user cache outside the work tree, shared by every clone on this machine, like the
# Temporal CLI: ~/.cache/live-merge/guest-<hash of its inputs>/. The inputs: the Debian versions of
# the cloud kernel (linux-image-cloud-amd64's current ABI package) and busybox-static, gcc's version,
# and the sources under lab/guest/ (writer.c, init.sh, the initramfs builder). Any change gives a
# new hash, so a new build; a second run with the same inputs does nothing but print the path.
#
# The build: `apt-get download` the two packages, `dpkg-deb -x` them (nothing is installed on this
# machine), compile lab/guest/writer.c with `gcc -static -O2`, stage the root (busybox, /init, the
# writer, the virtio block modules in load order, decompressed when shipped as .ko.xz/.ko.zst) and
# pack it as a newc cpio with lab/guest/build-initramfs.ts. About 10 s.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${LIVE_MERGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/live-merge}"
# The virtio block driver and what it needs, in load order.
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk)
sources=(lab/guest/writer.c lab/guest/init.sh lab/guest/initramfs.ts lab/guest/build-initramfs.ts scripts/ensure-guest.sh)

say() { echo "ensure-guest: $*" >&2; }
die() { say "$*"; exit 1; }
for tool in apt-get apt-cache dpkg-deb gcc sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is needed to build the lab guest and is not on PATH"
done

# One apt-cache call (it takes about half a second): the metapackage's candidate pins the kernel's
# ABI package and its exact version, e.g. "Depends: linux-image-6.1.0-57-cloud-amd64 (= 6.1.192-3)".
resolve() {
  local show
  show="$(apt-cache show --no-all-versions linux-image-cloud-amd64 busybox-static 2>/dev/null || true)"
  read -r kpkg kver < <(printf '%s\n' "$show" |
    sed -n 's/^Depends: \(linux-image-[0-9][^ ]*\) (= \([^)]*\)).*/\1 \2/p' | head -n1) || true
  bver="$(printf '%s\n' "$show" | awk '/^Package: busybox-static$/ { b = 1 } b && /^Version:/ { print $2; exit }')"
}
resolve
if [ -z "${kpkg:-}" ] || [ -z "${kver:-}" ] || [ -z "$bver" ]; then
  [ "$(id -u)" -eq 0 ] || die "apt knows no linux-image-cloud-amd64/busybox-static; run apt-get update as root"
  say "apt's package lists lack linux-image-cloud-amd64 or busybox-static: apt-get update"
  apt-get update -qq >&2
  resolve
  [ -n "${kpkg:-}" ] && [ -n "${kver:-}" ] && [ -n "$bver" ] || die "apt has no linux-image-cloud-amd64 or busybox-static"
fi
abi="${kpkg#linux-image-}"

inputs="$(
  echo "kernel $kpkg $kver"
  echo "busybox-static $bver"
  echo "gcc $(gcc -dumpfullversion)"
  echo "modules ${modules[*]}"
  (cd "$repo" && sha256sum "${sources[@]}")
)"
hash="$(printf '%s\n' "$inputs" | sha256sum | cut -c1-16)"
dir="$cache/guest-$hash"
if [ -f "$dir/guest.json" ]; then echo "$dir"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/.guest.lock"
flock 9
if [ -f "$dir/guest.json" ]; then echo "$dir"; exit 0; fi

start=$(date +%s)
say "building the lab guest once into $dir (first time for these inputs: about 10 s)"
say "  kernel $kpkg $kver, busybox-static $bver"
work="$(mktemp -d "$cache/.guest-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
download() {
  (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kver" "busybox-static=$bver") >&2
}
say "  apt-get download $kpkg=$kver busybox-static=$bver"
if ! download; then
  [ "$(id -u)" -eq 0 ] || die "apt-get download failed; an apt-get update (as root) may help"
  say "  download failed; apt-get update and once more"
  apt-get update -qq >&2
  download
fi
say "  dpkg-deb -x (the kernel is not installed on this machine)"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/x"; done
kernel="$work/x/boot/vmlinuz-$abi"
[ -f "$kernel" ] || die "the package $kpkg has no /boot/vmlinuz-$abi"

root="$work/root"
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/lib/modules"
install -m 0755 "$work/x/bin/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 0755 "$repo/lab/guest/init.sh" "$root/init"
say "  gcc -static -O2 lab/guest/writer.c"
gcc -static -O2 -Wall -Wextra -Werror -o "$root/writer" "$repo/lab/guest/writer.c"

moddir="$work/x/lib/modules/$abi"
: >"$root/lib/modules/order"
for m in "${modules[@]}"; do
  found="$(find "$moddir/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" -o -name "$m.ko.gz" | head -n1)"
  if [ -z "$found" ]; then
    if grep -q "/$m.ko\$" "$moddir/modules.builtin" 2>/dev/null; then
      say "  $m is built into the kernel"
      continue
    fi
    die "the kernel $abi has no module $m and does not have it built in"
  fi
  case "$found" in
    *.ko.xz) xz -dc "$found" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$found" >"$root/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$found" >"$root/lib/modules/$m.ko" ;;
    *) cp "$found" "$root/lib/modules/$m.ko" ;;
  esac
  echo "$m" >>"$root/lib/modules/order"
done
say "  modules: $(tr '\n' ' ' <"$root/lib/modules/order")"

out="$work/out"
mkdir -p "$out"
cp "$kernel" "$out/vmlinuz"
(cd "$repo" && node_modules/.bin/tsx lab/guest/build-initramfs.ts "$root" "$out/initramfs.cpio") >&2
cp "$root/writer" "$out/writer"
{
  printf '{\n  "kernelPackage": "%s",\n  "kernelVersion": "%s",\n  "kernelAbi": "%s",\n' "$kpkg" "$kver" "$abi"
  printf '  "busyboxVersion": "%s",\n  "modules": "%s",\n' "$bver" "$(tr '\n' ' ' <"$root/lib/modules/order" | sed 's/ $//')"
  printf '  "inputsHash": "%s",\n  "builtAt": "%s"\n}\n' "$hash" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$out/guest.json"
rm -rf "$dir"
mv "$out" "$dir"
say "built the lab guest in $(( $(date +%s) - start )) s: $dir"
echo "$dir"

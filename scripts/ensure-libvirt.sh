#!/usr/bin/env bash
# Makes sure libvirt (libvirtd with its QEMU driver, virsh) is installed, configured and running, for
# the libvirt driver's tests and `make demo DEMO_ARGS=--libvirt`. No systemd here: virtlogd and
# libvirtd run in the background, their pids in $state/*.pid; a second run finds them alive and
# returns at once. Debian's packages create no libvirt-qemu user and no qemu.conf, without which
# libvirtd does not start: both are made here.
set -euo pipefail
uri=qemu:///system
state=${LIVE_MERGE_LIBVIRT_STATE:-$HOME/.cache/live-merge/libvirt}
mkdir -p "$state"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
answers() { timeout 60 virsh -c "$uri" version >/dev/null 2>&1; }

need=()
command -v virsh >/dev/null 2>&1 || need+=(libvirt-clients)
command -v libvirtd >/dev/null 2>&1 || need+=(libvirt-daemon)
[ -e /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so ] ||
  ls /usr/lib/*/libvirt/connection-driver/libvirt_driver_qemu.so >/dev/null 2>&1 || need+=(libvirt-daemon-driver-qemu)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-libvirt: missing ${need[*]}; install them (Debian: sudo apt-get install -y --no-install-recommends ${need[*]})" >&2
    exit 1
  fi
  echo "ensure-libvirt: installing ${need[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 || {
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  }
fi

if [ "$(id -u)" -ne 0 ]; then
  # Not root: only an already running libvirtd can serve.
  answers && exit 0
  echo "ensure-libvirt: libvirtd does not answer on $uri and starting it needs root" >&2
  exit 1
fi

getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --shell /usr/sbin/nologin libvirt-qemu

conf=/etc/libvirt/qemu.conf
want=$'user = "root"\ngroup = "root"\nsecurity_driver = "none"'
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
  mkdir -p /etc/libvirt
  printf '%s\n' "$want" >"$conf"
  # A running libvirtd read the old file: it is restarted below.
  if alive "$state/libvirtd.pid"; then
    kill "$(cat "$state/libvirtd.pid")"
    for _ in $(seq 50); do alive "$state/libvirtd.pid" || break; sleep 0.2; done
  fi
fi

if ! alive "$state/virtlogd.pid"; then
  setsid nohup virtlogd >"$state/virtlogd.log" 2>&1 &
  echo $! >"$state/virtlogd.pid"
fi
if ! alive "$state/libvirtd.pid"; then
  # A libvirtd started otherwise (not by this script) serves as well.
  if ! answers; then
    setsid nohup libvirtd >"$state/libvirtd.log" 2>&1 &
    echo $! >"$state/libvirtd.pid"
  fi
fi
for _ in $(seq 120); do
  answers && exit 0
  sleep 0.5
done
echo "ensure-libvirt: libvirtd does not answer on $uri (log: $state/libvirtd.log)" >&2
exit 1

#!/bin/busybox sh
# The lab guest's /init (busybox-static's shell, in the initramfs that scripts/ensure-guest.sh
# builds): mounts /proc and devtmpfs, loads the virtio block driver's modules in dependency order
# (the cloud kernel has them as modules; the build lists the ones it copied in /lib/modules/order,
# skipping any the kernel has built in) and hands PID 1 over to the writer.
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in $(/bin/busybox cat /lib/modules/order); do
  /bin/busybox insmod "/lib/modules/$m.ko" || echo "init: insmod $m failed" >/dev/console
done
exec /writer

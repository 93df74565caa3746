/**
 * The QEMU command line of a lab VM: its chains as `-blockdev` nodes, a virtio-blk device per disk,
 * two QMP sockets; booting the lab guest, or paused with no guest OS.
 */
import { volumePath } from '../../src/domain/layout';
import { guestKernelCmdline, type LabGuest } from '../guest/config';
import { blkdebugNodeName, fileNodeName, formatNodeName, type LabBlkdebug, type LabManifest } from './manifest';

export function assertPlainPath(label: string, p: string): void {
  // QEMU's key=value option syntax reads ',' as a separator.
  if (p.includes(',')) throw new Error(`${label} ${p} contains a comma, which QEMU's option syntax cannot take`);
}

export function buildQemuArgs(m: LabManifest, pidFile: string): string[] {
  const args = [
    ...(m.guest ? [] : ['-S']),
    '-nodefaults',
    '-display',
    'none',
    '-machine',
    'q35,accel=tcg',
    '-name',
    m.vmId,
  ];
  if (m.guest) args.push(...guestArgs(m.guest, m.disks.length));
  for (const disk of m.disks) {
    let lower: string | undefined;
    disk.volumeIds.forEach((volumeId, i) => {
      const file = volumePath(m.storageRoot, disk.diskId, volumeId);
      const fileNode = fileNodeName(volumeId);
      const fmtNode = formatNodeName(volumeId);
      // As libvirt opens a chain: backing layers read-only, file nodes auto-read-only. A block
      // commit then reopens its base read-write and, when done, read-only again, and that reopen
      // flushes the base's qcow2 metadata to the file (a base opened read-write is never reopened,
      // and QEMU 7.2 leaves the committed clusters unmapped on disk until some later flush).
      const readOnly = m.backingReadOnly && i < disk.volumeIds.length - 1 ? ',read-only=on' : '';
      const direct = m.cache === 'none' ? ',cache.direct=on,aio=threads' : '';
      args.push('-blockdev', `driver=file,filename=${file},node-name=${fileNode},auto-read-only=on${direct}`);
      let fmtFile = fileNode;
      if (m.blkdebug?.volumeId === volumeId) {
        fmtFile = blkdebugNodeName(volumeId);
        args.push('-blockdev', blkdebugBlockdev(m.blkdebug, fmtFile, fileNode));
      }
      // The base gets no `backing` option: it has no backing file, so QEMU opens none.
      args.push(
        '-blockdev',
        `driver=qcow2,file=${fmtFile},node-name=${fmtNode}${readOnly}${lower ? `,backing=${lower}` : ''}`,
      );
      lower = fmtNode;
    });
    args.push('-device', `virtio-blk-pci,drive=${lower},id=${disk.deviceId}`);
  }
  args.push('-qmp', `unix:${m.qmpSocket},server=on,wait=off`);
  args.push('-qmp', `unix:${m.auxQmpSocket},server=on,wait=off`);
  args.push('-pidfile', pidFile);
  return args;
}

/**
 * A blkdebug node over `image` whose writes fail with `errno` after `afterWrites` data writes of
 * the format layer above: blkdebug starts in state 1, each `write_aio` event moves state i to i+1,
 * and in state afterWrites + 1 the `write_aio` event arms an error on every write (`iotype=write`,
 * not `once`, so the retries of the job fail too).
 */
export function blkdebugBlockdev(b: LabBlkdebug, nodeName: string, image: string): string {
  const opts = [`driver=blkdebug`, `node-name=${nodeName}`, `image=${image}`];
  for (let i = 0; i < b.afterWrites; i++) {
    opts.push(`set-state.${i}.event=write_aio`, `set-state.${i}.state=${i + 1}`, `set-state.${i}.new_state=${i + 2}`);
  }
  opts.push(
    'inject-error.0.event=write_aio',
    `inject-error.0.state=${b.afterWrites + 1}`,
    'inject-error.0.iotype=write',
    `inject-error.0.errno=${b.errno}`,
  );
  return opts.join(',');
}

/**
 * The guest's part: kernel, initramfs and command line; no reboot (a reboot, a power-off or a
 * panic ends QEMU); two serial ports. COM1 (ttyS0) is the console, a unix socket (no client needed:
 * wait=off) with a log file: the host writes "STOP" into it. COM2 (ttyS1) carries only the writer's
 * ACK lines, and QEMU writes them straight to a file in the run dir, so the record of what the
 * guest was told is durable whatever host process dies, QEMU included (each write() of QEMU's is in
 * the file once QEMU returns to the guest).
 */
function guestArgs(g: LabGuest, disks: number): string[] {
  for (const [label, p] of [
    ['kernel', g.kernel],
    ['initramfs', g.initrd],
    ['ACK log', g.ackLog],
    ['console socket', g.consoleSocket],
    ['console log', g.consoleLog],
  ])
    assertPlainPath(label, p);
  return [
    '-m',
    String(g.memoryMiB),
    '-no-reboot',
    '-kernel',
    g.kernel,
    '-initrd',
    g.initrd,
    '-append',
    guestKernelCmdline(g, disks),
    '-chardev',
    `socket,id=console,path=${g.consoleSocket},server=on,wait=off,logfile=${g.consoleLog},logappend=on`,
    '-serial',
    'chardev:console',
    '-chardev',
    `file,id=acks,path=${g.ackLog},append=on`,
    '-serial',
    'chardev:acks',
  ];
}

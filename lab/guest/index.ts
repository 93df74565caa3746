/**
 * The lab guest: a real running guest for lab VMs (`createLabVm({ guest: {…} })`), and the check
 * that nothing it was told is written got lost.
 *
 * The guest is Debian's cloud kernel with an initramfs of busybox-static, /init (init.sh) and the
 * writer (writer.c, a static C program), built and cached by scripts/ensure-guest.sh in
 * ~/.cache/live-merge/guest-<hash of inputs>/. The writer writes checksummed records to every disk
 * with O_DIRECT | O_DSYNC and reports each acknowledged write on the second serial port before it
 * issues the next; QEMU writes that port to `<runDir>/<vmId>/guest-acks.log`. The console (first
 * serial port) is the unix socket `console.sock` beside it, logged to `guest-console.log`: the line
 * "STOP" makes the writer flush, report DONE and power off, which ends QEMU (`-no-reboot`).
 *
 * writer.c, init.sh     the guest's program and init
 * initramfs.ts          newc cpio archives; build-initramfs.ts packs the staged root (run by the script)
 * artifacts.ts          ensureGuestArtifacts: the cached kernel and initramfs
 * config.ts             the guest's options, its manifest record, its kernel command line
 * acks.ts               the ACK log, parsed with zod
 * control.ts            requestGuestStop, waitForGuestAcks
 * records.ts            the record format: what a record-sized slot of the write region holds
 * ack-state.ts          the ACK log per disk: the last acknowledged record at each offset
 * image-check.ts        qemu-img check of one volume
 * report.ts             the check's report and its problem kinds
 * check.ts              checkGuestWrites: the check (checkGuestWritesOf: the same on any stopped VM, libvirt's too)
 */
export { type AckLine, type AckLog, countAcks, parseAckLine, readAckLog } from './acks';
export { ensureGuestArtifacts, type GuestArtifacts } from './artifacts';
export { checkGuestWrites, checkGuestWritesOf, type GuestVmLayout } from './check';
export {
  GUEST_ACK_LOG,
  GUEST_CONSOLE_LOG,
  GUEST_CONSOLE_SOCKET,
  guestKernelCmdline,
  type LabGuest,
  type LabGuestOptions,
  labGuestOptionsSchema,
  labGuestSchema,
} from './config';
export { type GuestStopAnswer, requestGuestStop, waitForGuestAcks } from './control';
export { checkImage } from './image-check';
export { classifySlot, RECORD_MAGIC } from './records';
export type {
  GuestCheckOptions,
  GuestCheckReport,
  GuestDiskReport,
  GuestProblem,
  GuestProblemKind,
  ImageCheck,
} from './report';

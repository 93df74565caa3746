/**
 * The lab guest in a libvirt domain: stopping it (STOP on its console, as in the QMP lab) and the
 * check that every write it was told is done reads back (lab/guest/check.ts).
 *
 * libvirt hands QEMU's serial files to virtlogd (its default stdio handler): QEMU writes the ACK
 * lines into a pipe and virtlogd appends them to the ACK log. A line the guest was told of is thus
 * in virtlogd's pipe, not yet in the file, for a moment; so the stop waits for the DONE lines in
 * the file, and the check reads it only then.
 */
import { readAckLog } from '../guest/acks';
import { checkGuestWritesOf } from '../guest/check';
import { type GuestStopAnswer, requestGuestStop } from '../guest/control';
import type { GuestCheckOptions, GuestCheckReport } from '../guest/report';
import { destroyLibvirtLabVm, type LibvirtLabVm, libvirtLabVmPid } from './domain';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export type LibvirtGuestStop = 'guest-powered-off' | 'destroyed' | 'not-running';

/** Disks whose DONE line the ACK log holds. */
export async function doneDisks(ackLog: string): Promise<Set<number>> {
  const done = new Set<number>();
  for (const l of (await readAckLog(ackLog)).lines) if (l.kind === 'DONE') done.add(l.disk);
  return done;
}

async function until(cond: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(100);
  }
}

/**
 * Asks the guest to stop (it flushes, writes DONE per disk and powers off, which ends the domain:
 * on_poweroff destroy), then waits for the domain to end and the DONE lines to reach the ACK log.
 * A guest that has not gone within `timeoutMs` is destroyed.
 */
export async function stopLibvirtGuest(vm: LibvirtLabVm, timeoutMs = 20_000): Promise<LibvirtGuestStop> {
  const g = vm.guest;
  if (!g) throw new Error(`libvirt lab VM ${vm.vmId} runs no guest`);
  if ((await libvirtLabVmPid(vm.vmId)) === undefined) return 'not-running';
  const answer: GuestStopAnswer = await requestGuestStop(g.consoleSocket, timeoutMs);
  const gone = await until(async () => (await libvirtLabVmPid(vm.vmId)) === undefined, answer === 'closed' ? 5_000 : 0);
  if (!gone) {
    await destroyLibvirtLabVm(vm);
    return 'destroyed';
  }
  await until(async () => (await doneDisks(g.ackLog)).size === vm.disks.length, 5_000);
  return 'guest-powered-off';
}

/** The check of lab/guest on a stopped libvirt guest; refuses a domain that still runs. */
export async function checkLibvirtGuestWrites(
  vm: LibvirtLabVm,
  options: GuestCheckOptions = {},
): Promise<GuestCheckReport> {
  const g = vm.guest;
  if (!g) throw new Error(`libvirt lab VM ${vm.vmId} runs no guest: there is nothing to check`);
  const pid = await libvirtLabVmPid(vm.vmId);
  if (pid !== undefined) throw new Error(`libvirt domain ${vm.vmId} still runs (pid ${pid}): stop it before the check`);
  return checkGuestWritesOf({ ...vm, guest: g }, options);
}

/**
 * libvirt domains whose lab guest writes through a merge: the layout, rate and speed limit of
 * test/guest/guest-vm.ts (2 disks × 3 volumes of LAYER_MIB lab data per layer, the guest writing
 * 4 KiB records to a 4 MiB region of each disk at GUEST_RATE), in a domain libvirt runs.
 */
import type { GuestCheckReport } from '../../lab/guest';
import { readAckLog } from '../../lab/guest';
import { createLibvirtLabVm, type LibvirtLabVm, libvirtLabVmPid } from '../../lab/libvirt/domain';
import { checkLibvirtGuestWrites, stopLibvirtGuest } from '../../lab/libvirt/guest';
import { expectGuestWritesKept, GUEST_RATE, LAYER_MIB } from '../guest/guest-vm';
import type { FaultStack } from '../harness/process-stack';
import { domainName } from './scenario';

/** A 2-disk domain booting the lab guest; `idPrefix` keeps its image dirs apart from other tests' on the stack's storage root. */
export function guestDomain(stack: FaultStack, name: string, idPrefix: string): Promise<LibvirtLabVm> {
  return createLibvirtLabVm({
    storageRoot: stack.storageRoot,
    runDir: stack.runDir,
    vmId: domainName(name),
    disks: 2,
    volumes: 3,
    layerDataMiB: LAYER_MIB,
    sizeMiB: 4 * LAYER_MIB + 4,
    idPrefix,
    guest: { rate: GUEST_RATE, regionMiB: 4 },
  });
}

/** ACK lines per disk so far. */
export async function acksPerDisk(vm: LibvirtLabVm): Promise<number[]> {
  const counts = vm.disks.map(() => 0);
  for (const l of (await readAckLog(vm.guest!.ackLog)).lines) if (l.kind === 'ACK') counts[l.disk]++;
  return counts;
}

/** Resolves once the guest acknowledged `atLeast` writes on every disk; fails if the domain ends first. */
export async function waitForWrites(vm: LibvirtLabVm, atLeast = 3, timeoutMs = 60_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const counts = await acksPerDisk(vm);
    if (counts.every((n) => n >= atLeast)) return counts;
    if ((await libvirtLabVmPid(vm.vmId)) === undefined)
      throw new Error(`domain ${vm.vmId} ended with ACKs ${counts.join(', ')}`);
    if (Date.now() > deadline) throw new Error(`the guest wrote only ${counts.join(', ')} records per disk`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Stops the guest (STOP, DONE lines, power-off ends the domain), runs the check and expects zero
 * lost acknowledged writes, writes on every disk during the merge, the layer patterns intact and
 * every volume clean.
 */
export async function stopAndCheckGuest(
  scenario: string,
  vm: LibvirtLabVm,
  duringMerge: number[],
): Promise<GuestCheckReport> {
  expect(await stopLibvirtGuest(vm)).toBe('guest-powered-off');
  const report = await checkLibvirtGuestWrites(vm);
  expectGuestWritesKept(scenario, report, duringMerge, true);
  return report;
}

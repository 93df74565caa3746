import { waitForGuestAcks } from '../../lab/guest';
import { createLabVm, destroyLabVm, type LabVm } from '../../lab/vm';
import type { FaultStack } from '../harness/process-stack';

/** Each VM's guest writes per second over its disks: light, so several VMs fit 2 cores. */
const GUEST_RATE = 10;

/**
 * A chaos run's VM `<name>-<index>`: `disks` disks of 3 volumes (4 MiB of lab data a layer), its
 * guest writing; resolves once the guest has written to each disk, so that it writes before the
 * merge starts and on through it.
 */
export async function chaosVm(stack: FaultStack, name: string, index: number, disks: number): Promise<LabVm> {
  const vm = await createLabVm({
    storageRoot: stack.storageRoot,
    runDir: stack.runDir,
    vmId: `${name}-${index}`,
    idPrefix: `${name[0]}${index}-`,
    disks,
    volumes: 3,
    layerDataMiB: 4,
    sizeMiB: 20,
    guest: { rate: GUEST_RATE, regionMiB: 4 },
  });
  try {
    await waitForGuestAcks(vm.guest!.ackLog, 2 * disks);
  } catch (err) {
    await destroyLabVm(stack.runDir, vm.vmId).catch(() => undefined);
    throw err;
  }
  return vm;
}

/**
 * `make demo DEMO_ARGS=--stopped`: snapshot removal from a VM that is shut off. The lab VM's guest
 * writes to both disks, then powers off; the same LiveMergeWorkflow request removes a snapshot of
 * each disk offline (disk0: intermediate commit, the layer above rebased onto the base; disk1:
 * active commit, the base becomes the volume it starts from). The VM is then started from the
 * volumes the result names, its data verified, and every write the guest acknowledged before the
 * shutdown checked.
 */
import { WorkflowFailedError } from '@temporalio/client';

import { checkGuestWrites, waitForGuestAcks } from '../guest';
import { destroyLabVm, startLabVm, stopLabVm, verifyLabVm } from '../vm';
import { createDemoVm, type DemoVariant } from './merge';
import { acksPerDisk, renderGuestCheck, renderVerification } from './render';

export async function stoppedDemo(opts: DemoVariant): Promise<number> {
  const { runDir, vmId } = opts;
  console.log(
    `\n==> creating lab VM ${vmId}: 2 disks x 3 qcow2 volumes, ${opts.dataMib} MiB per layer, its guest writing to both disks (${opts.guestRate} records/s)`,
  );
  const vm = await createDemoVm(opts);
  opts.cleanups.push(() => destroyLabVm(runDir, vmId));
  await waitForGuestAcks(vm.guest!.ackLog, 20);
  const stopped = await stopLabVm(runDir, vmId);
  const written = await acksPerDisk(vm);
  console.log(`\n==> the VM is shut off (${stopped}); its guest acknowledged ${written.join(' and ')} writes`);
  for (const d of vm.disks) console.log(`  ${d.diskId}: ${[...d.volumeIds].reverse().join(' -> ')}   (active first)`);

  const { outcome, uiLink, vmLink } = await opts.merge(vm.disks, async () => undefined);
  if (!outcome.ok) {
    const cause = outcome.error instanceof WorkflowFailedError ? outcome.error.cause?.message : String(outcome.error);
    console.log(`\nmerge FAILED: ${cause}\nWeb UI: ${uiLink}\nall merges of ${vmId}: ${vmLink}`);
    return 1;
  }
  console.log('\n==> merge completed offline');
  for (const d of outcome.value.disks)
    console.log(
      `  ${d.diskId}: ${d.outcome} (${d.mode ?? 'live'}, ${d.commitKind} commit), ${d.chainBefore.join(' -> ')}  =>  ${d.chainAfter.join(' -> ')}; start it from ${d.activeVolumeId}`,
    );
  const activeVolumes = Object.fromEntries(outcome.value.disks.map((d) => [d.diskId, d.activeVolumeId ?? '']));

  const check = await checkGuestWrites(runDir, vmId, { activeVolumes });
  console.log(`\n==> starting ${vmId} from the volumes the merge named`);
  await startLabVm(runDir, vmId, { activeVolumes });
  const after = await verifyLabVm(runDir, vmId);
  await stopLabVm(runDir, vmId);
  console.log(renderVerification(after));
  console.log(renderGuestCheck(check, written, stopped, 'before the shutdown'));
  console.log(`\nWeb UI: ${uiLink}\nall merges of ${vmId}: ${vmLink}`);
  const named = after.disks.every((d) => d.chain[0] === activeVolumes[d.diskId]);
  return after.ok && named && check.ok ? 0 : 1;
}

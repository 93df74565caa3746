/**
 * `make demo DEMO_ARGS=--libvirt`: the same merge on a domain that libvirt manages (a transient
 * domain on the lab's chains whose lab guest writes to both disks throughout), the host agent run
 * with `--driver libvirt`. Shows the chains libvirt reports before and after, then stops the guest,
 * verifies every region's data and checks that every acknowledged guest write reads back.
 */
import { existsSync } from 'node:fs';

import { WorkflowFailedError } from '@temporalio/client';

import { DEFAULT_LIBVIRT_URI } from '../../src/config/worker-config';
import { volumePath } from '../../src/domain/layout';
import { waitForGuestAcks } from '../guest';
import { createLibvirtLabVm, destroyLibvirtLabVm } from '../libvirt/domain';
import { checkLibvirtGuestWrites, stopLibvirtGuest } from '../libvirt/guest';
import { type LibvirtDiskReport, stopAndCheckData, verifyLibvirtChains } from '../libvirt/verify';
import type { DemoVariant } from './merge';
import { acksPerDisk, renderGuestCheck } from './render';

function renderChains(title: string, disks: LibvirtDiskReport[]): string {
  const lines = [title];
  for (const d of disks)
    lines.push(
      `  ${d.diskId}: ${d.libvirtChain.join(' -> ')}   (virsh dumpxml, active first; image headers ${d.chainOk ? 'agree' : `say ${d.headerChain.join(' -> ')}`})`,
    );
  return lines.join('\n');
}

export async function libvirtDemo(opts: DemoVariant): Promise<number> {
  const { storageRoot, runDir, vmId } = opts;
  console.log(
    `\n==> creating libvirt domain ${vmId} (virsh create, type qemu): 2 disks x 3 qcow2 volumes, ${opts.dataMib} MiB per layer, its guest writing to both disks (${opts.guestRate} records/s)`,
  );
  // A domain of that name left by an earlier demo that did not get to stop it.
  await destroyLibvirtLabVm({ uri: DEFAULT_LIBVIRT_URI, vmId });
  const vm = await createLibvirtLabVm({
    storageRoot,
    vmId,
    disks: 2,
    volumes: 3,
    layerDataMiB: opts.dataMib,
    sizeMiB: 4 * opts.dataMib + 16,
    runDir,
    guest: { rate: opts.guestRate },
  });
  opts.cleanups.push(() => destroyLibvirtLabVm(vm));
  await waitForGuestAcks(vm.guest!.ackLog, 20);
  const before = await verifyLibvirtChains(vm, runDir);
  console.log(renderChains('chains before:', before));
  if (!before.every((d) => d.chainOk)) throw new Error('the chains libvirt reports do not match the image headers');

  let acksBefore: number[] = [];
  const { request, outcome, uiLink, vmLink } = await opts.merge(vm.disks, async () => {
    acksBefore = await acksPerDisk(vm);
  });
  const duringMerge = (await acksPerDisk(vm)).map((n, i) => n - acksBefore[i]);
  if (!outcome.ok) {
    const cause = outcome.error instanceof WorkflowFailedError ? outcome.error.cause?.message : String(outcome.error);
    console.log(`\nmerge FAILED: ${cause}\nWeb UI: ${uiLink}\nall merges of ${vmId}: ${vmLink}`);
    return 1;
  }
  console.log('\n==> merge completed');
  for (const d of outcome.value.disks) {
    const top = request.disks.find((x) => x.diskId === d.diskId)!.topVolumeId;
    const gone = !existsSync(volumePath(storageRoot, d.diskId, top));
    console.log(
      `  ${d.diskId}: ${d.outcome} (${d.commitKind} commit), ${d.chainBefore.join(' -> ')}  =>  ${d.chainAfter.join(' -> ')}; top volume file ${gone ? 'deleted' : 'STILL PRESENT'}`,
    );
  }
  const after = await verifyLibvirtChains(vm, runDir);
  console.log(renderChains('chains before:', before));
  console.log(renderChains('chains after:', after));
  const shortened = after.every((d, i) => d.libvirtChain.length === before[i].libvirtChain.length - 1);
  // The guest stops (it flushes and powers off) only now, after the merge; then the checks.
  const stopped = await stopLibvirtGuest(vm);
  const regions = await stopAndCheckData(vm, after);
  const bad = regions.filter((r) => !r.ok);
  const check = await checkLibvirtGuestWrites(vm);
  const ok = shortened && after.every((d) => d.chainOk) && bad.length === 0 && check.ok;
  console.log(
    `data verification: ${bad.length === 0 ? 'PASSED' : 'FAILED'} (domain stopped, ${regions.length - bad.length}/${regions.length} regions read back their layer's pattern)`,
  );
  for (const r of bad) console.log(`  ${r.diskId} region @${r.offset}: ${r.detail ?? 'mismatch'}`);
  console.log(renderGuestCheck(check, duringMerge, stopped));
  console.log(`\nWeb UI: ${uiLink}\nall merges of ${vmId}: ${vmLink}`);
  return ok ? 0 : 1;
}

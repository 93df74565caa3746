/**
 * `make demo DEMO_ARGS=--libvirt`: the same merge on a domain that libvirt manages (a transient
 * domain on the lab's chains, paused with no guest OS), the host agent run with `--driver libvirt`.
 * Shows the chains libvirt reports before and after, and verifies every region's data once the
 * domain is stopped.
 */
import { existsSync } from 'node:fs';

import { WorkflowFailedError } from '@temporalio/client';

import { volumePath } from '../../src/domain/layout';
import { createLibvirtLabVm, DEFAULT_LIBVIRT_URI, destroyLibvirtLabVm } from '../libvirt/domain';
import { type LibvirtDiskReport, stopAndCheckData, verifyLibvirtChains } from '../libvirt/verify';
import type { runDemoMerge } from './merge';

function renderChains(title: string, disks: LibvirtDiskReport[]): string {
  const lines = [title];
  for (const d of disks)
    lines.push(
      `  ${d.diskId}: ${d.libvirtChain.join(' -> ')}   (virsh dumpxml, active first; image headers ${d.chainOk ? 'agree' : `say ${d.headerChain.join(' -> ')}`})`,
    );
  return lines.join('\n');
}

export async function libvirtDemo(opts: {
  storageRoot: string;
  runDir: string;
  vmId: string;
  dataMib: number;
  cleanups: Array<() => Promise<void>>;
  merge: (disks: Parameters<typeof runDemoMerge>[0]['disks']) => ReturnType<typeof runDemoMerge>;
}): Promise<number> {
  const { storageRoot, runDir, vmId } = opts;
  console.log(
    `\n==> creating libvirt domain ${vmId} (virsh create, type qemu): 2 disks x 3 qcow2 volumes, ${opts.dataMib} MiB per layer`,
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
  });
  opts.cleanups.push(() => destroyLibvirtLabVm(vm));
  const before = await verifyLibvirtChains(vm, runDir);
  console.log(renderChains('chains before:', before));
  if (!before.every((d) => d.chainOk)) throw new Error('the chains libvirt reports do not match the image headers');

  const { request, outcome, uiLink, vmLink } = await opts.merge(vm.disks);
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
  const regions = await stopAndCheckData(vm, after);
  const bad = regions.filter((r) => !r.ok);
  const ok = shortened && after.every((d) => d.chainOk) && bad.length === 0;
  console.log(
    `data verification: ${bad.length === 0 ? 'PASSED' : 'FAILED'} (domain stopped, ${regions.length - bad.length}/${regions.length} regions read back their layer's pattern)`,
  );
  for (const r of bad) console.log(`  ${r.diskId} region @${r.offset}: ${r.detail ?? 'mismatch'}`);
  console.log(`\nWeb UI: ${uiLink}\nall merges of ${vmId}: ${vmLink}`);
  return ok ? 0 : 1;
}

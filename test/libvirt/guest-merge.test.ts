import { existsSync } from 'node:fs';

import { ensureGuestArtifacts } from '../../lab/guest';
import { destroyLibvirtLabVm, type LibvirtLabVm, libvirtLabVmPid } from '../../lab/libvirt/domain';
import { verifyLibvirtChains } from '../../lab/libvirt/verify';
import { volumePath } from '../../src/domain/layout';
import { BANDWIDTH } from '../guest/guest-vm';
import { mergeRequest } from '../harness/merge-request';
import { FaultStack } from '../harness/process-stack';
import { recordRecovery, startMerge } from '../harness/scenario';
import { acksPerDisk, guestDomain, stopAndCheckGuest, waitForWrites } from './guest-domain';
import { QemuJobs } from './qemu-jobs';
import { untilJobRuns } from './scenario';

/**
 * Merges of a libvirt domain whose lab guest writes to both disks from before the merge starts
 * until after it ended, through the whole product (dev server, engine and a host agent with
 * `--driver libvirt`, one process each): an intermediate commit on vda and an active commit with
 * pivot on vdb at once, speed-limited so the jobs run while the guest writes; then the guest stops
 * and the check finds every acknowledged write.
 */

jest.setTimeout(240_000);

let stack: FaultStack;
const vms: LibvirtLabVm[] = [];
beforeAll(async () => {
  await ensureGuestArtifacts();
  stack = await new FaultStack({ driver: 'libvirt' }).start();
}, 300_000);
afterEach(async () => {
  for (const vm of vms.splice(0)) await destroyLibvirtLabVm(vm).catch(() => undefined);
});
afterAll(async () => stack?.close());

async function mergeWhileWriting(name: string, prefix: string, scenario: string, opts: { killHost?: boolean } = {}) {
  const vm = await guestDomain(stack, name, prefix);
  vms.push(vm);
  await waitForWrites(vm);
  const jobs = await QemuJobs.listen(vm);
  const request = mergeRequest(vm, `snap-${vm.vmId}`, ['intermediate', 'active'], {
    bandwidthBytesPerSec: BANDWIDTH,
  });
  const before = await acksPerDisk(vm);
  const started = Date.now();
  const merged = async () => {
    const handle = await startMerge(stack, request);
    let restarted: number | undefined;
    if (opts.killHost) {
      await untilJobRuns(vm, 'vda');
      await untilJobRuns(vm, 'vdb');
      await stack.host!.kill();
      restarted = Date.now();
      await stack.startHost();
    }
    const result = await handle.result();
    if (restarted !== undefined) recordRecovery(scenario, Date.now() - restarted);
    return { handle, result, after: await acksPerDisk(vm) };
  };
  // The listener stops whatever happens (it is a child process of this one).
  const { handle, result, after } = await merged().finally(() => jobs.stop());
  expect(result.disks.map((d) => [d.diskId, d.outcome, d.commitKind])).toEqual([
    [`${prefix}disk0`, 'merged', 'intermediate'],
    [`${prefix}disk1`, 'merged', 'active'],
  ]);
  const mergeMs = Date.now() - started;
  expect((await handle.describe()).status.name).toBe('COMPLETED');
  expect(await libvirtLabVmPid(vm.vmId)).toBeDefined(); // the guest wrote on through the merge

  // The chains libvirt reports (virsh dumpxml), agreeing with the image headers.
  const chains = await verifyLibvirtChains(vm, stack.runDir);
  expect(chains.map((d) => d.libvirtChain)).toEqual([
    [`${prefix}d0v2`, `${prefix}d0v0`],
    [`${prefix}d1v1`, `${prefix}d1v0`],
  ]);
  expect(chains.every((d) => d.chainOk)).toBe(true);
  // The merged tops deleted, every other volume kept.
  const tops = request.disks.map((d) => d.topVolumeId);
  for (const disk of vm.disks)
    for (const v of disk.volumeIds)
      expect([v, existsSync(volumePath(stack.storageRoot, disk.diskId, v))]).toEqual([v, !tops.includes(v)]);
  // QEMU ran one block job per disk (a restarted agent adopted, never started again).
  expect(jobs.perTarget()).toEqual({ vda: 1, vdb: 1 });

  const during = after.map((n, i) => n - before[i]);
  const report = await stopAndCheckGuest(scenario, vm, during);
  expect(report.disks.map((d) => d.chain)).toEqual(chains.map((d) => d.libvirtChain));
  const durations = [...jobs.jobs.values()].map(
    (j) =>
      `${j.target} ${j.concluded === undefined ? '?' : j.concluded - j.created} ms` +
      (j.ready === undefined ? '' : ` (ready after ${j.ready - j.created} ms)`),
  );
  console.log(`${scenario}: merge ${mergeMs} ms; QEMU jobs: ${durations.join(', ')}`);
}

test('intermediate commit and active commit with pivot while the guest writes: merged, no acknowledged write lost', () =>
  mergeWhileWriting('gm-two', 'g-', 'libvirt guest two disks'));

test('host agent killed mid-job while the guest writes: adopted, merged, one job per disk, no acknowledged write lost', () =>
  mergeWhileWriting('gm-kill', 'k-', 'libvirt guest host agent killed mid-job', { killHost: true }));

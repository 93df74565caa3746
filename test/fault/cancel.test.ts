import { verifyLabVm } from '../../lab/vm';
import { stackPerFile } from '../harness/file-stack';
import { watchJobs } from '../harness/jobs';
import { expectOnlyTopsDeleted, mergeRequest, MiB, startMerge } from '../harness/scenario';
import { until } from '../harness/until';

/**
 * 8. A merge cancelled while its block job runs: the job is cancelled, no pivot happens, the
 * chain stays as it was, nothing is deleted, and the workflow shows cancelled.
 */

jest.setTimeout(180_000);

// One stack for the file: each test starts the host agent with its holds.
const file = stackPerFile();

async function expectCancelled(vmId: string, snapshotId: string, chainsBefore: string[][]) {
  const handle = file.stack.client.workflow.getHandle(`live-merge-${snapshotId}`);
  await handle.result().catch(() => undefined);
  expect((await handle.describe()).status.name).toBe('CANCELLED');
  const report = await verifyLabVm(file.stack.runDir, vmId);
  expect(report.ok).toBe(true);
  expect(report.disks.map((d) => d.chain)).toEqual(chainsBefore);
}

test('8a. cancelled during an intermediate commit', async () => {
  const vm = await file.labVm('vm-f8a', 1, 3, 16);
  const chainsBefore = (await verifyLabVm(file.stack.runDir, vm.vmId)).disks.map((d) => d.chain);
  const request = mergeRequest(vm, 'snap-f8a', ['intermediate'], { bandwidthBytesPerSec: MiB });
  const jobs = await watchJobs(file.stack.runDir, vm.vmId);
  const handle = await startMerge(file.stack, request);
  await until(async () => (await jobs.running()) === 1);
  await handle.cancel();
  await handle.result().catch(() => undefined);
  // The job was cancelled and its record dismissed: QEMU runs and keeps nothing.
  expect(await jobs.list()).toEqual([]);
  await jobs.close();
  await expectCancelled(vm.vmId, 'snap-f8a', chainsBefore);
  expectOnlyTopsDeleted(file.stack, vm, []);
});

test('8b. cancelled during an active commit in ready: no pivot, the VM still writes to the top', async () => {
  // The host agent holds right before the pivot, with the job in `ready`.
  await file.stack.restartHost(['before:completeJob']);
  const vm = await file.labVm('vm-f8b', 1, 3, 4);
  const chainsBefore = (await verifyLabVm(file.stack.runDir, vm.vmId)).disks.map((d) => d.chain);
  const request = mergeRequest(vm, 'snap-f8b', ['active']);
  const jobs = await watchJobs(file.stack.runDir, vm.vmId);
  const handle = await startMerge(file.stack, request);
  await file.stack.reached('before:completeJob');
  expect((await jobs.list()).map((j) => j.status)).toEqual(['ready']);
  await handle.cancel();
  await handle.result().catch(() => undefined);
  expect(await jobs.list()).toEqual([]);
  await jobs.close();
  await expectCancelled(vm.vmId, 'snap-f8b', chainsBefore);
  expectOnlyTopsDeleted(file.stack, vm, []);
});

import { destroyLabVm, verifyLabVm } from '../../lab/vm';
import { watchJobs } from '../harness/jobs';
import { FaultStack } from '../harness/process-stack';
import { expectOnlyTopsDeleted, labVm, mergeRequest, MiB, startMerge } from '../harness/scenario';
import { until } from '../harness/until';

/**
 * 8. A merge cancelled while its block job runs: the job is cancelled, no pivot happens, the
 * chain stays as it was, nothing is deleted, and the workflow shows cancelled.
 */

jest.setTimeout(180_000);

// One stack for the file: each test starts the host agent with its holds, and its VM is destroyed after it.
let stack: FaultStack;
const vmIds: string[] = [];
beforeAll(async () => {
  stack = await new FaultStack().start();
});
afterEach(async () => {
  for (const vmId of vmIds.splice(0)) await destroyLabVm(stack.runDir, vmId).catch(() => undefined);
  await stack.restartHost();
});
afterAll(async () => stack?.close());

async function expectCancelled(vmId: string, snapshotId: string, chainsBefore: string[][]) {
  const handle = stack.client.workflow.getHandle(`live-merge-${snapshotId}`);
  await handle.result().catch(() => undefined);
  expect((await handle.describe()).status.name).toBe('CANCELLED');
  const report = await verifyLabVm(stack.runDir, vmId);
  expect(report.ok).toBe(true);
  expect(report.disks.map((d) => d.chain)).toEqual(chainsBefore);
}

test('8a. cancelled during an intermediate commit', async () => {
  vmIds.push('vm-f8a');
  const vm = await labVm(stack, 'vm-f8a', 1, 3, 16);
  const chainsBefore = (await verifyLabVm(stack.runDir, vm.vmId)).disks.map((d) => d.chain);
  const request = mergeRequest(vm, 'snap-f8a', ['intermediate'], { bandwidthBytesPerSec: MiB });
  const jobs = await watchJobs(stack.runDir, vm.vmId);
  const handle = await startMerge(stack, request);
  await until(async () => (await jobs.running()) === 1);
  await handle.cancel();
  await handle.result().catch(() => undefined);
  // The job was cancelled and its record dismissed: QEMU runs and keeps nothing.
  expect(await jobs.list()).toEqual([]);
  await jobs.close();
  await expectCancelled(vm.vmId, 'snap-f8a', chainsBefore);
  expectOnlyTopsDeleted(stack, vm, []);
});

test('8b. cancelled during an active commit in ready: no pivot, the VM still writes to the top', async () => {
  // The host agent holds right before the pivot, with the job in `ready`.
  await stack.restartHost(['before:completeJob']);
  vmIds.push('vm-f8b');
  const vm = await labVm(stack, 'vm-f8b', 1, 3, 4);
  const chainsBefore = (await verifyLabVm(stack.runDir, vm.vmId)).disks.map((d) => d.chain);
  const request = mergeRequest(vm, 'snap-f8b', ['active']);
  const jobs = await watchJobs(stack.runDir, vm.vmId);
  const handle = await startMerge(stack, request);
  await stack.reached('before:completeJob');
  expect((await jobs.list()).map((j) => j.status)).toEqual(['ready']);
  await handle.cancel();
  await handle.result().catch(() => undefined);
  expect(await jobs.list()).toEqual([]);
  await jobs.close();
  await expectCancelled(vm.vmId, 'snap-f8b', chainsBefore);
  expectOnlyTopsDeleted(stack, vm, []);
});

/**
 * Live merges while the guest writes (in-process stack: a dev server, the engine worker and a host
 * agent on real QEMU). Each merge starts while the guest writes to both disks, the guest stops
 * only after the merge ended, and the check finds every acknowledged write.
 */
import { existsSync } from 'node:fs';

import { ensureGuestArtifacts } from '../../lab/guest';
import { type LabVm, runningLabVmPid, verifyLabVm } from '../../lab/vm';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import { volumePath } from '../../src/domain/layout';
import { LiveMergeWorkflow } from '../../src/workflows';
import { startTestStack, type TestStack } from '../harness/in-process-stack';
import { mergeRequest } from '../harness/merge-request';
import { acksPerDisk, BANDWIDTH, GuestVms, stopAndCheck, waitForWrites } from './guest-vm';

jest.setTimeout(180_000);

let stack: TestStack;
const vms = new GuestVms(() => stack);

beforeAll(async () => {
  await ensureGuestArtifacts();
  stack = await startTestStack();
}, 300_000);
afterEach(() => vms.cleanup());
afterAll(async () => stack?.close());

/** Merges `kinds` (disk0, then disk1) while the guest writes; returns the VM, the result and the ACKs during the merge. */
async function mergeWhileWriting(vmId: string, kinds: Array<'intermediate' | 'active'>) {
  const vm: LabVm = await vms.create(vmId);
  await waitForWrites(vm);
  const request = mergeRequest(vm, `snap-${vmId}`, kinds, { bandwidthBytesPerSec: BANDWIDTH });
  const before = await acksPerDisk(vm);
  const handle = await stack.temporal.client.workflow.start(LiveMergeWorkflow, {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId(String(request.snapshotId)),
    args: [request],
  });
  const result = await handle.result();
  const after = await acksPerDisk(vm);
  expect(await runningLabVmPid(stack.runDir, vm.vmId)).toBe(vm.pid); // the guest wrote on through it
  expect((await handle.describe()).status.name).toBe('COMPLETED');
  const verified = await verifyLabVm(stack.runDir, vm.vmId);
  expect(verified.ok).toBe(true);
  for (const d of request.disks) expect(existsSync(volumePath(stack.storageRoot, d.diskId, d.topVolumeId))).toBe(false);
  return { vm, result, chains: verified.disks.map((d) => d.chain), during: after.map((n, i) => n - before[i]) };
}

test('intermediate commit while the guest writes: merged, no acknowledged write lost', async () => {
  const { vm, result, chains, during } = await mergeWhileWriting('gm-mid', ['intermediate']);
  expect(result.disks).toEqual([expect.objectContaining({ diskId: 'disk0', outcome: 'merged' })]);
  expect(chains).toEqual([
    ['d0v2', 'd0v0'],
    ['d1v2', 'd1v1', 'd1v0'],
  ]);
  const report = await stopAndCheck('guest intermediate commit', stack.runDir, vm, during);
  expect(report.disks.map((d) => d.chain)).toEqual(chains);
});

test('active commit with pivot while the guest writes to the top: merged, no acknowledged write lost', async () => {
  const { vm, result, chains, during } = await mergeWhileWriting('gm-act', ['active']);
  expect(result.disks).toEqual([expect.objectContaining({ diskId: 'disk0', outcome: 'merged', commitKind: 'active' })]);
  expect(chains).toEqual([
    ['d0v1', 'd0v0'],
    ['d1v2', 'd1v1', 'd1v0'],
  ]);
  const report = await stopAndCheck('guest active commit', stack.runDir, vm, during);
  expect(report.disks.map((d) => d.chain)).toEqual(chains);
});

test('two disks at once (intermediate and active) while the guest writes to both', async () => {
  const { vm, result, chains, during } = await mergeWhileWriting('gm-two', ['intermediate', 'active']);
  expect(result.disks.map((d) => [d.diskId, d.outcome, d.commitKind])).toEqual([
    ['disk0', 'merged', 'intermediate'],
    ['disk1', 'merged', 'active'],
  ]);
  expect(chains).toEqual([
    ['d0v2', 'd0v0'],
    ['d1v1', 'd1v0'],
  ]);
  const report = await stopAndCheck('guest two disks', stack.runDir, vm, during);
  expect(report.disks.map((d) => d.chain)).toEqual(chains);
});

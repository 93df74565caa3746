/**
 * A guest that wrote, then powered off: the same LiveMergeWorkflow request merges both disks
 * offline (an intermediate commit and an active one), the guest check then finds every write the
 * guest acknowledged before the shutdown in the volumes the result names, every volume is clean,
 * only the tops are gone, and the VM starts from those volumes.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

import { checkGuestWrites, ensureGuestArtifacts } from '../../lab/guest';
import { startLabVm, stopLabVm, verifyLabVm } from '../../lab/vm';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import { volumePath } from '../../src/domain/layout';
import { LiveMergeWorkflow } from '../../src/workflows';
import { startTestStack, type TestStack } from '../harness/in-process-stack';
import { mergeRequest } from '../harness/merge-request';
import { expectGuestWritesKept, GuestVms, waitForWrites } from './guest-vm';

jest.setTimeout(240_000);
const run = promisify(execFile);

let stack: TestStack;
const vms = new GuestVms(() => stack);

beforeAll(async () => {
  await ensureGuestArtifacts();
  stack = await startTestStack();
}, 300_000);
afterEach(() => vms.cleanup());
afterAll(async () => stack?.close());

test('a guest that powered off: both disks merged offline, every acknowledged write in the volumes named', async () => {
  const vm = await vms.create('go-kinds');
  const written = await waitForWrites(vm, 5);
  expect(await stopLabVm(stack.runDir, vm.vmId)).toBe('guest-powered-off');

  const request = mergeRequest(vm, 'snap-go-kinds', ['intermediate', 'active']);
  const handle = await stack.temporal.client.workflow.start(LiveMergeWorkflow, {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId(String(request.snapshotId)),
    args: [request],
  });
  const result = await handle.result();
  expect(result.disks.map((d) => [d.diskId, d.outcome, d.mode, d.commitKind, d.activeVolumeId])).toEqual([
    ['disk0', 'merged', 'offline', 'intermediate', 'd0v2'],
    ['disk1', 'merged', 'offline', 'active', 'd1v1'],
  ]);
  const activeVolumes = Object.fromEntries(result.disks.map((d) => [d.diskId, d.activeVolumeId!]));

  const report = await checkGuestWrites(stack.runDir, vm.vmId, { activeVolumes });
  expect(report.disks.map((d) => d.chain)).toEqual([
    ['d0v2', 'd0v0'],
    ['d1v1', 'd1v0'],
  ]);
  // No write during the merge (the VM was off): what counts is what the guest acknowledged before.
  expectGuestWritesKept('guest offline merge (shut off)', report, written, true);

  for (const d of request.disks) expect(existsSync(volumePath(stack.storageRoot, d.diskId, d.topVolumeId))).toBe(false);
  for (const d of vm.disks)
    for (const v of d.volumeIds) {
      const file = volumePath(stack.storageRoot, d.diskId, v);
      if (existsSync(file)) await run('qemu-img', ['check', '-q', file]);
    }
  const started = await startLabVm(stack.runDir, vm.vmId, { activeVolumes });
  expect(started.chains).toEqual({ disk0: ['d0v0', 'd0v2'], disk1: ['d1v0', 'd1v1'] });
  expect((await verifyLabVm(stack.runDir, vm.vmId)).ok).toBe(true);
  await stopLabVm(stack.runDir, vm.vmId);
});

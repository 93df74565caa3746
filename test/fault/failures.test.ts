import { WorkflowFailedError } from '@temporalio/client';

import { destroyLabVm, verifyLabVm } from '../../lab/vm';
import { watchJobs } from '../harness/jobs';
import { FaultStack } from '../harness/process-stack';
import { expectMerged, expectOnlyTopsDeleted, labVm, mergeRequest, MiB, startMerge } from '../harness/scenario';
import { until } from '../harness/until';

jest.setTimeout(180_000);

async function failureMessage(promise: Promise<unknown>): Promise<string> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  return String((err as WorkflowFailedError).cause?.message);
}

test('6. a block job that fails in QEMU keeps its top and names the reason; the other disk finishes; a re-run succeeds', async () => {
  const stack = await new FaultStack().start();
  try {
    const vm = await labVm(stack, 'vm-f6', 2, 3, 16);
    const request = mergeRequest(vm, 'snap-f6', ['intermediate', 'active'], {
      bandwidthBytesPerSec: MiB,
      pollIntervalMs: 100,
    });
    // disk1's active commit runs unlimited once disk0's slow job is cancelled: no speed limit there.
    const jobs = await watchJobs(stack.runDir, vm.vmId);
    const handle = await startMerge(stack, request);
    await until(async () => (await jobs.list()).some((j) => j.id === 'lm.disk0.d0v1' && j.status === 'running'));
    await jobs.qmp.execute('block-job-cancel', { device: 'lm.disk0.d0v1', force: true });
    const message = await failureMessage(handle.result());
    await jobs.close();
    expect(message).toMatch(
      /1 of 2 disks failed: disk0 \(disk disk0: block job lm\.disk0\.d0v1 failed in QEMU: Operation canceled; top volume d0v1 kept\)/,
    );
    const report = await verifyLabVm(stack.runDir, vm.vmId);
    expect(report.ok).toBe(true);
    expect(report.disks[0].chain).toEqual(['d0v2', 'd0v1', 'd0v0']);
    expect(report.disks[1].chain).toEqual(['d1v1', 'd1v0']);
    expectOnlyTopsDeleted(stack, vm, ['d1v2']);

    // The same merge again, later: disk0 merges now, disk1 counts as already merged.
    const again = await startMerge(stack, { ...request, options: {} });
    const result = await again.result();
    expect(result.disks.map((d) => [d.diskId, d.outcome])).toEqual([
      ['disk0', 'merged'],
      ['disk1', 'alreadyMerged'],
    ]);
    await expectMerged(stack, vm, request);
  } finally {
    await destroyLabVm(stack.runDir, 'vm-f6');
    await stack.close();
  }
});

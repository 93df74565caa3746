import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError } from '@temporalio/client';

import { destroyLabVm } from '../../lab/vm';
import { watchJobs } from '../harness/jobs';
import { FaultStack, HOST_ID } from '../harness/process-stack';
import { expectMerged, labVm, mergeRequest, MiB, startMerge } from '../harness/scenario';
import { until } from '../harness/until';

/** 9. Two snapshots of one VM at once on the same disk; the same snapshot started twice. */

jest.setTimeout(180_000);

test('9. a second snapshot on a disk with a running job is refused; QEMU never runs two jobs on one disk; a snapshot runs once', async () => {
  const stack = await new FaultStack().start();
  try {
    const vm = await labVm(stack, 'vm-f9', 1, 3, 8);
    const [d] = vm.disks;
    const first = mergeRequest(vm, 'snap-f9a', ['intermediate'], { bandwidthBytesPerSec: 2 * MiB });
    const jobs = await watchJobs(stack.runDir, vm.vmId);
    const handle = await startMerge(stack, first);
    await until(async () => (await jobs.running()) === 1);

    // The same snapshot again: Temporal refuses the second start; there is one workflow.
    await expect(startMerge(stack, first)).rejects.toBeInstanceOf(WorkflowExecutionAlreadyStartedError);

    // Another snapshot touching the same disk (its active layer into the middle volume).
    const second = await startMerge(stack, {
      snapshotId: 'snap-f9b',
      vmId: vm.vmId,
      hostId: HOST_ID,
      disks: [{ diskId: d.diskId, baseVolumeId: d.volumeIds[1], topVolumeId: d.volumeIds[2] }],
    });
    const err = await second.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(String((err as WorkflowFailedError).cause?.message)).toMatch(
      /disk disk0 already runs block job lm\.disk0\.d0v1 \(running\); one job per disk/,
    );

    await handle.result();
    expect(jobs.created).toEqual(['lm.disk0.d0v1']);
    await jobs.close();
    await expectMerged(stack, vm, first);
    const runs = [];
    for await (const w of stack.client.workflow.list({ query: `WorkflowId = "live-merge-snap-f9a"` }))
      runs.push(w.runId);
    expect(runs).toHaveLength(1);
  } finally {
    await destroyLabVm(stack.runDir, 'vm-f9');
    await stack.close();
  }
});

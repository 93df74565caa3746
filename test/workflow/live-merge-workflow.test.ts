import { Context } from '@temporalio/activity';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { Worker } from '@temporalio/worker';

import type { HostActivities } from '../../src/activities';
import type { MergeStarted } from '../../src/activities/merge';
import { engineActivities } from '../../src/activities/pickup';
import type { BlockJobEnd } from '../../src/activities/wait-for-block-job';
import { diskMergeWorkflowId, ENGINE_TASK_QUEUE, hostJobTaskQueue, liveMergeWorkflowId } from '../../src/config/names';
import type { LiveMergeRequest } from '../../src/domain/input';
import type { MergeProgress } from '../../src/domain/progress';
import { DiskMergeWorkflow, LiveMergeWorkflow } from '../../src/workflows';
import { startTestTemporal, type TestTemporal, workflowBundle } from '../harness/temporal';
import { mockHostWorkers, withWorkers } from '../harness/workers';

/** Workflow logic against a real dev server, with the host activities mocked. */

type Calls = Array<{ name: string; diskId: string }>;

function mockHost(
  calls: Calls,
  overrides: Partial<Record<keyof HostActivities, (input: { diskId: string }) => Promise<unknown>>> = {},
) {
  const record =
    <T>(name: keyof HostActivities, fallback: (input: { diskId: string }) => Promise<T>) =>
    async (input: { diskId: string }) => {
      calls.push({ name, diskId: input.diskId });
      const override = overrides[name];
      return override ? override(input) : fallback(input);
    };
  return {
    merge: record('merge', async (i): Promise<MergeStarted> => ({
      outcome: 'started',
      jobId: `lm-${i.diskId}`,
      kind: 'intermediate',
      chain: ['top', 'base'],
    })),
    waitForBlockJob: record('waitForBlockJob', async (): Promise<BlockJobEnd> => ({
      outcome: 'concluded',
      offset: 10,
      len: 10,
      pivotRequested: false,
    })),
    verifyChain: record('verifyChain', async () => ({ chain: ['base'] })),
    deleteVolume: record('deleteVolume', async () => ({ deleted: true, path: '/x' })),
    cleanup: record('cleanup', async () => ({ dismissedJob: true })),
    cancelBlockJob: record('cancelBlockJob', async () => ({ finalStatus: 'concluded' })),
  };
}

const request = (snapshotId: string, disks = ['d0', 'd1']): LiveMergeRequest => ({
  snapshotId,
  vmId: 'vm1',
  hostId: 'h1',
  disks: disks.map((diskId) => ({ diskId, baseVolumeId: 'base', topVolumeId: 'top' })),
  options: { pollIntervalMs: 100 },
});

describe('LiveMergeWorkflow with mocked host activities', () => {
  let t: TestTemporal;
  beforeAll(async () => {
    t = await startTestTemporal();
  });
  afterAll(async () => t?.close());

  async function run(
    req: LiveMergeRequest,
    host: ReturnType<typeof mockHost>,
    workflowId = liveMergeWorkflowId(String(req.snapshotId)),
    whileRunning?: (handle: { cancel(): Promise<unknown> }) => Promise<void>,
  ) {
    const engine = await Worker.create({
      connection: t.connection,
      taskQueue: ENGINE_TASK_QUEUE,
      workflowBundle: await workflowBundle(),
    });
    return withWorkers([engine, ...(await mockHostWorkers(t.connection, 'h1', host))], async () => {
      const handle = await t.client.workflow.start(LiveMergeWorkflow, {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId,
        args: [req],
      });
      if (whileRunning) await whileRunning(handle);
      const result = await handle.result().then(
        (value) => ({ ok: true as const, value }),
        (error: unknown) => ({ ok: false as const, error }),
      );
      const progress = await handle.query<MergeProgress>('progress').catch(() => undefined);
      const description = await handle.describe();
      return { result, progress, status: description.status.name };
    });
  }

  test('a host whose agent never picks its disks up: each fails HostUnreachable after the pickup timeout, its workflow ended unrun', async () => {
    const engine = await Worker.create({
      connection: t.connection,
      taskQueue: ENGINE_TASK_QUEUE,
      workflowBundle: await workflowBundle(),
      activities: engineActivities,
    });
    await withWorkers([engine], async () => {
      const req = { ...request('nobody-1'), hostId: 'nobody', options: { hostPickupTimeoutSeconds: 1 } };
      const t0 = Date.now();
      const err = await t.client.workflow
        .execute(LiveMergeWorkflow, {
          taskQueue: ENGINE_TASK_QUEUE,
          workflowId: liveMergeWorkflowId('nobody-1'),
          args: [req],
        })
        .catch((e: unknown) => e);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
      const cause = (err as WorkflowFailedError).cause as ApplicationFailure;
      expect(cause.type).toBe('DiskMergeFailed');
      expect(cause.details?.[0]).toEqual(
        ['d0', 'd1'].map((diskId) => ({
          diskId,
          outcome: 'failed',
          reason: `disk ${diskId}: host nobody did not pick up the merge within 1 s: no host agent polls live-merge-host-nobody-jobs; top volume top kept`,
          failureType: 'HostUnreachable',
          topKept: true,
        })),
      );
      for (const diskId of ['d0', 'd1']) {
        const child = t.client.workflow.getHandle(diskMergeWorkflowId('nobody-1', diskId));
        expect((await child.describe()).status.name).toBe('TERMINATED');
        const events = (await child.fetchHistory()).events ?? [];
        expect(events.some((e) => e.workflowTaskStartedEventAttributes)).toBe(false);
      }
    });
  });

  test('a disk picked up after its pickup timeout refuses by itself: HostUnreachable, no merge step', async () => {
    const handle = await t.client.workflow.start(DiskMergeWorkflow, {
      taskQueue: hostJobTaskQueue('late'),
      workflowId: 'late-disk-1',
      args: [
        {
          snapshotId: 'late-1',
          vmId: 'vm1',
          hostId: 'late',
          disk: { diskId: 'd0', baseVolumeId: 'base', topVolumeId: 'top' },
          options: { pollIntervalMs: 100, hostPickupTimeoutSeconds: 1 },
        } as never,
      ],
    });
    await new Promise((r) => setTimeout(r, 1500));
    const calls: Calls = [];
    const err = await withWorkers(await mockHostWorkers(t.connection, 'late', mockHost(calls)), () =>
      handle.result().catch((e: unknown) => e),
    );
    expect(((err as WorkflowFailedError).cause as ApplicationFailure).type).toBe('HostUnreachable');
    expect(calls.map((c) => c.name)).toEqual(['cleanup']);
  });

  test('merges every disk in parallel and reports each as merged', async () => {
    const calls: Calls = [];
    const { result, progress, status } = await run(request('ok-1'), mockHost(calls));
    expect(status).toBe('COMPLETED');
    expect(result.ok && result.value.disks.map((d) => [d.diskId, d.outcome])).toEqual([
      ['d0', 'merged'],
      ['d1', 'merged'],
    ]);
    expect(progress?.disks.map((d) => d.phase)).toEqual(['merged', 'merged']);
    for (const diskId of ['d0', 'd1']) {
      expect(calls.filter((c) => c.diskId === diskId).map((c) => c.name)).toEqual([
        'merge',
        'waitForBlockJob',
        'verifyChain',
        'deleteVolume',
        'cleanup',
      ]);
    }
  });

  test('a disk already merged skips the wait and still deletes and cleans', async () => {
    const calls: Calls = [];
    const host = mockHost(calls, {
      merge: async (i) => ({ outcome: 'alreadyMerged', jobId: `lm-${i.diskId}`, chain: ['base'] }),
      deleteVolume: async () => ({ deleted: false, path: '/x' }),
    });
    const { result } = await run(request('already-1', ['d0']), host);
    expect(result.ok && result.value.disks[0]).toMatchObject({ outcome: 'alreadyMerged', topDeleted: false });
    expect(calls.map((c) => c.name)).toEqual(['merge', 'verifyChain', 'deleteVolume', 'cleanup']);
  });

  test('a failed block job fails that disk with its reason, keeps its top, and the other disk still merges', async () => {
    const calls: Calls = [];
    const host = mockHost(calls, {
      waitForBlockJob: async (i) =>
        i.diskId === 'd1'
          ? { outcome: 'concluded', error: 'Input/output error', offset: 3, len: 10, pivotRequested: false }
          : { outcome: 'concluded', offset: 10, len: 10, pivotRequested: false },
    });
    const { result, progress, status } = await run(request('fail-1'), host);
    expect(status).toBe('FAILED');
    expect(result.ok).toBe(false);
    const failure = !result.ok && result.error instanceof WorkflowFailedError ? result.error.cause : undefined;
    expect(failure).toBeInstanceOf(ApplicationFailure);
    expect((failure as ApplicationFailure).type).toBe('DiskMergeFailed');
    expect((failure as ApplicationFailure).message).toMatch(
      /1 of 2 disks failed: d1 \(disk d1: block job lm.d1.top failed in QEMU: Input\/output error; top volume top kept\)/,
    );
    expect(calls.filter((c) => c.diskId === 'd1').map((c) => c.name)).toEqual(['merge', 'waitForBlockJob', 'cleanup']);
    expect(calls.filter((c) => c.diskId === 'd0').map((c) => c.name)).toContain('deleteVolume');
    expect(progress?.disks.find((d) => d.diskId === 'd1')).toMatchObject({ phase: 'failed' });
  });

  test('a failed chain check never deletes', async () => {
    const calls: Calls = [];
    const host = mockHost(calls, {
      verifyChain: async () => {
        throw ApplicationFailure.create({
          type: 'ChainVerificationFailed',
          message: 'top volume top is still in the chain',
          nonRetryable: true,
        });
      },
    });
    const { result } = await run(request('verify-1', ['d0']), host);
    expect(result.ok).toBe(false);
    expect(calls.map((c) => c.name)).not.toContain('deleteVolume');
    expect(calls.map((c) => c.name)).toEqual(['merge', 'waitForBlockJob', 'verifyChain', 'cleanup']);
  });

  test.each([
    ['an empty disk list', { ...request('bad-1'), disks: [] }, /disks: must name at least one disk/],
    ['a path in an id', { ...request('bad-2'), vmId: '../etc' }, /vmId: must be letters/],
    [
      'a duplicate disk',
      { ...request('bad-3'), disks: [...request('x').disks, request('x').disks[0]] },
      /disks: must not name a disk twice/,
    ],
    [
      'top equal to base',
      { ...request('bad-4'), disks: [{ diskId: 'd0', baseVolumeId: 'v', topVolumeId: 'v' }] },
      /disks.0.topVolumeId: topVolumeId must differ/,
    ],
    ['a wrong type', { ...request('bad-5'), options: { pollIntervalMs: 'fast' } }, /options.pollIntervalMs/],
    ['an unknown field', { ...request('bad-6'), force: true }, /force/],
  ])('refuses %s at once, naming the field, and touches nothing', async (_name, req, message) => {
    const calls: Calls = [];
    const { result, status } = await run(
      req as LiveMergeRequest,
      mockHost(calls),
      liveMergeWorkflowId(String((req as { snapshotId: string }).snapshotId)),
    );
    expect(status).toBe('FAILED');
    const cause = !result.ok && result.error instanceof WorkflowFailedError ? result.error.cause : undefined;
    expect(cause).toBeInstanceOf(ApplicationFailure);
    expect((cause as ApplicationFailure).type).toBe('InvalidMergeInput');
    expect((cause as ApplicationFailure).message).toMatch(message);
    expect(calls).toEqual([]);
  });

  test('refuses a workflow id not derived from the snapshot', async () => {
    const calls: Calls = [];
    const { result } = await run(request('idcheck'), mockHost(calls), 'some-other-id');
    const cause = !result.ok && result.error instanceof WorkflowFailedError ? result.error.cause : undefined;
    expect((cause as ApplicationFailure).message).toMatch(/workflowId must be live-merge-idcheck/);
    expect(calls).toEqual([]);
  });

  test('a cancel while the block job runs cancels the job, deletes nothing, and shows cancelled', async () => {
    const calls: Calls = [];
    let waiting!: () => void;
    const inWait = new Promise<void>((resolve) => (waiting = resolve));
    const host = mockHost(calls, {
      waitForBlockJob: async () => {
        waiting();
        for (;;) {
          Context.current().heartbeat();
          await Context.current().sleep(100);
        }
      },
    });
    const { status, progress } = await run(
      request('cancel-1', ['d0']),
      host,
      liveMergeWorkflowId('cancel-1'),
      async (handle) => {
        await inWait;
        await handle.cancel();
      },
    );
    expect(status).toBe('CANCELLED');
    expect(calls.map((c) => c.name)).toEqual(['merge', 'waitForBlockJob', 'cancelBlockJob', 'cleanup']);
    expect(progress?.disks[0].phase).toBe('cancelled');
  });
});

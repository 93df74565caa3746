import { Context } from '@temporalio/activity';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { Worker } from '@temporalio/worker';

import type { SpeedStep } from '../../src/activities/inputs';
import type { MergeStarted } from '../../src/activities/merge';
import type { BlockJobSpeedSet } from '../../src/activities/set-block-job-speed';
import type { BlockJobEnd } from '../../src/activities/wait-for-block-job';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import { diskProgressSignalName } from '../../src/config/names';
import type { MergeProgress } from '../../src/domain/progress';
import { LiveMergeWorkflow, setBandwidthUpdate } from '../../src/workflows';
import { startTestTemporal, type TestTemporal, workflowBundle } from '../harness/temporal';
import { until } from '../harness/until';
import { mockHostWorkers, withWorkers } from '../harness/workers';

/** The setBandwidth update against a real dev server, with the host activities mocked. */

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

/** A host whose merge of `d1` and whose waits hold until released; records every speed change. */
function heldHost() {
  const speeds: SpeedStep[] = [];
  const d1Merge = gate();
  const waitsDone = gate();
  const waiting = new Set<string>();
  return {
    speeds,
    d1Merge,
    waitsDone,
    waiting,
    activities: {
      merge: async (i: { diskId: string }): Promise<MergeStarted> => {
        if (i.diskId === 'd1') await d1Merge.opened;
        return { outcome: 'started', jobId: `lm.${i.diskId}.top`, kind: 'intermediate', chain: ['top', 'base'] };
      },
      waitForBlockJob: async (i: { diskId: string; progressWorkflowId?: string }): Promise<BlockJobEnd> => {
        waiting.add(i.diskId);
        const ctx = Context.current();
        // As the real wait does: it tells the merge the job runs (the child does not).
        if (i.progressWorkflowId) {
          await ctx.client.workflow
            .getHandle(i.progressWorkflowId)
            .signal(diskProgressSignalName, { diskId: i.diskId, phase: 'waiting', jobStatus: 'running' });
        }
        await Promise.race([waitsDone.opened, ctx.cancelled]);
        return { outcome: 'concluded', offset: 10, len: 10, pivotRequested: false };
      },
      verifyChain: async () => ({ chain: ['base'] }),
      deleteVolume: async () => ({ deleted: true, path: '/x' }),
      cleanup: async () => ({ dismissedJob: true }),
      cancelBlockJob: async () => ({ finalStatus: 'concluded' }),
      setBlockJobSpeed: async (s: SpeedStep): Promise<BlockJobSpeedSet> => {
        speeds.push(s);
        return { applied: true, jobStatus: 'running' };
      },
    },
  };
}

describe('setBandwidth update of LiveMergeWorkflow', () => {
  let t: TestTemporal;
  beforeAll(async () => {
    t = await startTestTemporal();
  });
  afterAll(async () => t?.close());

  async function withStack<T>(host: ReturnType<typeof heldHost>, fn: () => Promise<T>): Promise<T> {
    const engine = await Worker.create({
      connection: t.connection,
      taskQueue: ENGINE_TASK_QUEUE,
      workflowBundle: await workflowBundle(),
    });
    return withWorkers([engine, ...(await mockHostWorkers(t.connection, 'h1', host.activities))], fn);
  }

  test('a running job gets the new speed at once; a job that starts later gets it when it runs; the query shows it', async () => {
    const host = heldHost();
    await withStack(host, async () => {
      const handle = await t.client.workflow.start(LiveMergeWorkflow, {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: liveMergeWorkflowId('bw-1'),
        args: [
          {
            snapshotId: 'bw-1',
            vmId: 'vm1',
            hostId: 'h1',
            disks: ['d0', 'd1'].map((diskId) => ({ diskId, baseVolumeId: 'base', topVolumeId: 'top' })),
            options: { bandwidthBytesPerSec: 1000 },
          },
        ],
      });
      await until(async () => (await handle.query<MergeProgress>('progress')).disks[0].phase === 'waiting');

      const applied = await handle.executeUpdate(setBandwidthUpdate, { args: [{ bytesPerSec: 5000 }] });
      expect(applied).toEqual({
        bytesPerSec: 5000,
        disks: [
          { diskId: 'd0', applied: 'set', jobStatus: 'running' },
          { diskId: 'd1', applied: 'atJobStart' },
        ],
      });
      expect(host.speeds).toEqual([{ vmId: 'vm1', diskId: 'd0', jobId: 'lm.d0.top', bytesPerSec: 5000 }]);
      expect((await handle.query<MergeProgress>('progress')).bandwidthBytesPerSec).toBe(5000);

      // d1's job starts now, with the input's 1000 B/s: the workflow brings it to 5000 B/s.
      host.d1Merge.open();
      await until(() => host.speeds.some((s) => s.diskId === 'd1'));
      expect(host.speeds.filter((s) => s.diskId === 'd1')).toEqual([
        { vmId: 'vm1', diskId: 'd1', jobId: 'lm.d1.top', bytesPerSec: 5000 },
      ]);

      host.waitsDone.open();
      const result = await handle.result();
      expect(result.disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);
      const late = await handle
        .executeUpdate(setBandwidthUpdate, { args: [{ bytesPerSec: 0 }] })
        .catch((e: unknown) => e);
      expect(late).toBeInstanceOf(Error);
    });
  });

  test('an adaptive merge: the host sets the speed; an update fixes it, even at 0, for running and later jobs alike', async () => {
    const host = heldHost();
    const merges: Array<{ diskId: string }> = [];
    const waits: Array<{ diskId: string }> = [];
    const { merge, waitForBlockJob } = host.activities;
    host.activities.merge = (i) => (merges.push(i), merge(i));
    host.activities.waitForBlockJob = (i) => (waits.push(i), waitForBlockJob(i));
    // Held steps are let go whatever happens: a failed expectation must not hang the workers' shutdown.
    await withStack(host, async () => {
      try {
        const handle = await t.client.workflow.start(LiveMergeWorkflow, {
          taskQueue: ENGINE_TASK_QUEUE,
          workflowId: liveMergeWorkflowId('bw-adaptive'),
          args: [
            {
              snapshotId: 'bw-adaptive',
              vmId: 'vm1',
              hostId: 'h1',
              disks: ['d0', 'd1'].map((diskId) => ({ diskId, baseVolumeId: 'base', topVolumeId: 'top' })),
            },
          ],
        });
        await until(async () => (await handle.query<MergeProgress>('progress')).disks[0].phase === 'waiting');
        expect(await handle.query<MergeProgress>('progress')).toMatchObject({ speedMode: 'adaptive' });
        expect(merges.find((m) => m.diskId === 'd0')).toMatchObject({ adaptive: true });
        expect(waits.find((w) => w.diskId === 'd0')).toMatchObject({ speed: { latencyFactor: 2 } });

        const applied = await handle.executeUpdate(setBandwidthUpdate, { args: [{ bytesPerSec: 0 }] });
        expect(applied.disks.map((d) => d.applied)).toEqual(['set', 'atJobStart']);
        expect(await handle.query<MergeProgress>('progress')).toMatchObject({ speedMode: 'fixed' });
        // d1's job starts after the update: it gets the fixed 0 too, though 0 is the input's limit.
        host.d1Merge.open();
        await until(() => host.speeds.some((s) => s.diskId === 'd1'));
        expect(host.speeds.map((s) => [s.diskId, s.bytesPerSec])).toEqual([
          ['d0', 0],
          ['d1', 0],
        ]);
        host.waitsDone.open();
        expect((await handle.result()).disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);
      } finally {
        host.d1Merge.open();
        host.waitsDone.open();
      }
    });
  });

  test.each([
    ['a negative speed', { bytesPerSec: -1 }, /bytesPerSec: must not be negative/],
    ['a fraction', { bytesPerSec: 1.5 }, /bytesPerSec: must be a whole number/],
    ['a string', { bytesPerSec: '10M' }, /bytesPerSec: must be a number/],
    ['an unknown field', { bytesPerSec: 1, burst: 2 }, /burst/],
  ])(
    'the validator rejects %s before acceptance: nothing is asked of the host, nothing enters the history',
    async (_name, bad, message) => {
      const host = heldHost();
      host.d1Merge.open();
      await withStack(host, async () => {
        const snapshotId = `bw-bad-${Math.random().toString(36).slice(2, 8)}`;
        const handle = await t.client.workflow.start(LiveMergeWorkflow, {
          taskQueue: ENGINE_TASK_QUEUE,
          workflowId: liveMergeWorkflowId(snapshotId),
          args: [
            {
              snapshotId,
              vmId: 'vm1',
              hostId: 'h1',
              disks: [{ diskId: 'd0', baseVolumeId: 'base', topVolumeId: 'top' }],
            },
          ],
        });
        await until(() => host.waiting.has('d0'));
        const err = await handle
          .executeUpdate(setBandwidthUpdate, { args: [bad as { bytesPerSec: number }] })
          .catch((e: unknown) => e);
        expect(err).toBeInstanceOf(WorkflowUpdateFailedError);
        const cause = (err as WorkflowUpdateFailedError).cause;
        expect(cause).toBeInstanceOf(ApplicationFailure);
        expect((cause as ApplicationFailure).type).toBe('InvalidMergeInput');
        expect((cause as ApplicationFailure).message).toMatch(message);
        expect(host.speeds).toEqual([]);
        const history = await handle.fetchHistory();
        expect(history.events?.some((e) => e.workflowExecutionUpdateAcceptedEventAttributes)).toBe(false);
        host.waitsDone.open();
        await handle.result();
      });
    },
  );
});

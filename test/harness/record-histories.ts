/**
 * Records the histories that test/workflow/replay.test.ts replays: one LiveMergeWorkflow of two
 * disks (an intermediate commit, and an active commit whose wait reports waiting and pivoting) and
 * its two DiskMergeWorkflow children, run by the workflow code at `<src>/workflows` on a dev server
 * with the host mocked. To record with an earlier commit's code:
 *
 *   mkdir -p .lab/replay-base && git archive <commit> src | tar -x -C .lab/replay-base
 *   npx tsx test/harness/record-histories.ts .lab/replay-base/src test/fixtures/histories <label>
 *   rm -rf .lab/replay-base          # or `npm run lint` reads it too
 *
 * `--vm-stops` records the same merge with the VM gone during disk1's wait (its step fails with
 * VmGone): the merge fails on disk1, as merges recorded before the stopped-mid-merge path did.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { temporal as proto } from '@temporalio/proto';
import { bundleWorkflowCode, DefaultLogger, Worker } from '@temporalio/worker';

import { diskMergeWorkflowId, ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import type { LiveMergeRequest } from '../../src/domain/input';
import type { DiskProgress } from '../../src/domain/progress';
import { startTestTemporal } from './temporal';
import { mockHostWorkers, withWorkers } from './workers';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const [src, outDir, label, scenario] = process.argv.slice(2);
  if (!src || !outDir || !label) throw new Error('usage: record-histories.ts <src dir> <out dir> <label> [--vm-stops]');
  const vmStops = scenario === '--vm-stops';
  const temporal = await startTestTemporal();
  try {
    const srcDir = path.resolve(src);
    const workflowBundle = await bundleWorkflowCode({
      workflowsPath: path.join(srcDir, 'workflows'),
      preloadModules: ['zod', path.join(srcDir, 'workflows', 'schemas')],
      logger: new DefaultLogger('WARN'),
    });
    const engine = await Worker.create({
      connection: temporal.connection,
      taskQueue: ENGINE_TASK_QUEUE,
      workflowBundle,
    });
    const host = await mockHostWorkers(temporal.connection, 'host1', {
      merge: async (i: { diskId: string }) => ({
        outcome: 'started',
        jobId: `lm.${i.diskId}`,
        kind: i.diskId === 'disk1' ? 'active' : 'intermediate',
        chain: ['top', 'base'],
      }),
      waitForBlockJob: async (i: { diskId: string; progressWorkflowId?: string; commitKind?: string }) => {
        if (i.progressWorkflowId) {
          const parent = Context.current().client.workflow.getHandle(i.progressWorkflowId);
          const report = (p: Omit<DiskProgress, 'diskId'>) =>
            parent.signal('diskProgress', { diskId: i.diskId, commitKind: i.commitKind, ...p });
          await report({ phase: 'waiting', jobStatus: 'running', offset: 1, len: 10 });
          await sleep(300);
          if (i.commitKind === 'active') await report({ phase: 'pivoting', jobStatus: 'ready', offset: 10, len: 10 });
        }
        if (vmStops && i.diskId === 'disk1')
          throw ApplicationFailure.create({
            type: 'VmGone',
            message: 'VM vm1 is gone: its QEMU no longer answers on /run/vm1/qmp.sock (nothing listens on it)',
            nonRetryable: true,
          });
        return { outcome: 'concluded', offset: 10, len: 10, pivotRequested: i.commitKind === 'active' };
      },
      verifyChain: async () => ({ chain: ['base'] }),
      deleteVolume: async () => ({ deleted: true, path: '/x' }),
      cleanup: async () => ({ dismissedJob: true }),
      cancelBlockJob: async () => ({ finalStatus: 'concluded' }),
      setBlockJobSpeed: async () => ({ applied: true, jobStatus: 'running' }),
    });
    const snapshotId = `replay-${label}`;
    const request: LiveMergeRequest = {
      snapshotId,
      vmId: 'vm1',
      hostId: 'host1',
      disks: [
        { diskId: 'disk0', baseVolumeId: 'v0', topVolumeId: 'v1' },
        { diskId: 'disk1', baseVolumeId: 'v1', topVolumeId: 'v2' },
      ],
      options: { bandwidthBytesPerSec: 1048576 },
    };
    await withWorkers([engine, ...host], async () => {
      const handle = await temporal.client.workflow.start('LiveMergeWorkflow', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId: liveMergeWorkflowId(snapshotId),
        args: [request],
      });
      await handle.result().catch((err: unknown) => {
        if (!vmStops) throw err;
      });
    });
    const ids = [liveMergeWorkflowId(snapshotId), ...['disk0', 'disk1'].map((d) => diskMergeWorkflowId(snapshotId, d))];
    for (const id of ids) {
      const history = await temporal.client.workflow.getHandle(id).fetchHistory();
      const file = path.join(outDir, `${label}.${id}.history.pb`);
      // The history as the server sent it, protobuf-encoded: no JSON conversion in between.
      writeFileSync(file, proto.api.history.v1.History.encode(history).finish());
      console.log(`wrote ${file} (${history.events?.length ?? 0} events)`);
    }
  } finally {
    await temporal.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);

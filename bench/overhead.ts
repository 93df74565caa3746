import { ENGINE_TASK_QUEUE, diskMergeWorkflowId, liveMergeWorkflowId } from '../src/config/names';
import type { LiveMergeRequest } from '../src/domain/input';
import { formatNodeName } from '../src/lab/vm';
import { HOST_ID, destroyVm, startQemuStack, type QemuStack } from './support/qemu-stack';
import { MiB, median, round, type Bench, type BenchContext, type Figure } from './support/common';
import { rawCommit } from './raw-commit';

/**
 * Overhead vs raw commit, on real QEMU: a top volume with D MiB of written data, committed once by
 * a bare QMP script (start, wait for the event, done) and once by the full LiveMergeWorkflow on the
 * dev server (merge, wait, verify, delete, cleanup), each on a fresh lab VM with the same data.
 */

type Kind = 'intermediate' | 'active';

interface Sample {
  dataMiB: number;
  /** Storage speed limit applied to both (block-commit `speed`), MiB/s; 0 is none. */
  limitMiBps: number;
  kind: Kind;
  rep: number;
  rawMs: number;
  workflowMs: number;
  /** Of workflowMs: the deleteVolume step (flush of the base to disk, detach, unlink of the top). */
  deleteMs: number;
}

export const overheadBench: Bench = {
  name: 'overhead',
  title: 'Overhead vs raw block commit (real QEMU)',
  async run(ctx: BenchContext) {
    // Unlimited: QEMU copies from the page cache (about 1.5 GB/s here). The last row limits both sides
    // to 256 MiB/s, the speed of ordinary storage, to show the ratio where commits take seconds.
    const plan: Array<{ dataMiB: number; reps: number; limitMiBps: number }> = ctx.quick
      ? [{ dataMiB: 64, reps: 3, limitMiBps: 0 }]
      : [
          { dataMiB: 64, reps: 3, limitMiBps: 0 },
          { dataMiB: 256, reps: 3, limitMiBps: 0 },
          { dataMiB: 1024, reps: 3, limitMiBps: 0 },
          { dataMiB: 1024, reps: 2, limitMiBps: 256 },
        ];
    const stack = await startQemuStack('ovh');
    const samples: Sample[] = [];
    let n = 0;
    try {
      // A first merge warms the workers (bundle loaded, connections up), as in a running product.
      await workflowCommit(stack, 'warm', 2, 'intermediate');
      for (const { dataMiB, reps, limitMiBps } of plan) {
        for (const kind of ['intermediate', 'active'] as Kind[]) {
          for (let rep = 0; rep < reps; rep++) {
            // Alternate which goes first, so neither always meets a warmer page cache.
            const order = rep % 2 === 0 ? ['raw', 'workflow'] : ['workflow', 'raw'];
            const s: Sample = { dataMiB, limitMiBps, kind, rep, rawMs: 0, workflowMs: 0, deleteMs: 0 };
            const speed = limitMiBps * MiB;
            for (const who of order) {
              const vmId = `o${n++}`;
              if (who === 'raw') s.rawMs = await rawOn(stack, vmId, dataMiB, kind, speed);
              else ({ ms: s.workflowMs, deleteMs: s.deleteMs } = await workflowCommit(stack, vmId, dataMiB, kind, speed));
            }
            samples.push(s);
            ctx.log(`  ${dataMiB} MiB${limitMiBps ? ` at ${limitMiBps} MiB/s` : ''} ${kind} #${rep + 1}: raw ${s.rawMs.toFixed(0)} ms, workflow ${s.workflowMs.toFixed(0)} ms (delete step ${s.deleteMs} ms), ratio ${(s.workflowMs / s.rawMs).toFixed(3)}`);
          }
        }
      }
    } finally {
      await stack.close();
    }
    const figures: Figure[] = [];
    for (const { dataMiB, limitMiBps } of plan) {
      for (const kind of ['intermediate', 'active'] as Kind[]) {
        const ss = samples.filter((s) => s.dataMiB === dataMiB && s.kind === kind && s.limitMiBps === limitMiBps);
        const raw = median(ss.map((s) => s.rawMs));
        const wf = median(ss.map((s) => s.workflowMs));
        const ratio = round(median(ss.map((s) => s.workflowMs / s.rawMs)), 3);
        figures.push({
          metric: `${kind} commit, ${dataMiB} MiB${limitMiBps ? ` at ${limitMiBps} MiB/s` : ''}: LiveMergeWorkflow end to end`,
          value: Math.round(wf), unit: 'ms',
          baseline: Math.round(raw), baselineLabel: 'bare QMP script',
          ratio,
          ...(dataMiB >= 1024 ? { target: 'ratio <= 1.10', met: ratio <= 1.1 } : {}),
        });
      }
    }
    // What the orchestration adds, whatever the data: workflow minus raw, over every sample.
    const added = samples.map((s) => s.workflowMs - s.rawMs);
    figures.push({ metric: 'time added to a commit (workflow - raw), median of all runs', value: Math.round(median(added)), unit: 'ms' });
    for (const dataMiB of [...new Set(plan.map((p) => p.dataMiB))]) {
      const ss = samples.filter((s) => s.dataMiB === dataMiB && s.limitMiBps === 0);
      figures.push({ metric: `of which the delete step (flush base to disk, unlink top), ${dataMiB} MiB`, value: Math.round(median(ss.map((s) => s.deleteMs))), unit: 'ms' });
    }
    return {
      figures,
      details: {
        samples,
        addedMs: { p50: Math.round(median(added)), min: Math.round(Math.min(...added)), max: Math.round(Math.max(...added)) },
        note: 'ratio = median over reps of workflow/raw; workflow time is client start to result (merge, wait, verify, delete, cleanup); raw time is block-commit sent to BLOCK_JOB_COMPLETED',
      },
    };
  },
};

function layout(dataMiB: number, kind: Kind) {
  // Every lab layer writes layerDataMiB twice (its own region and the shared one): the top holds D MiB.
  const layerDataMiB = Math.max(1, Math.round(dataMiB / 2));
  const volumes = kind === 'intermediate' ? 3 : 2;
  return { layerDataMiB, volumes, sizeMiB: (volumes + 1) * layerDataMiB + 8 };
}

async function rawOn(stack: QemuStack, vmId: string, dataMiB: number, kind: Kind, speed: number): Promise<number> {
  const vm = await stack.labVm({ vmId, disks: 1, ...layout(dataMiB, kind) });
  const top = 'd0v1';
  const ms = await rawCommit({
    socket: vm.qmpSocket,
    jobId: `raw-${vmId}`,
    device: formatNodeName(kind === 'active' ? 'd0v1' : 'd0v2'),
    topNode: formatNodeName(top),
    baseNode: formatNodeName('d0v0'),
    ...(kind === 'intermediate' ? { backingFile: 'd0v0.qcow2' } : {}),
    active: kind === 'active',
    speed,
  });
  await destroyVm(stack, vmId);
  return ms;
}

async function workflowCommit(stack: QemuStack, vmId: string, dataMiB: number, kind: Kind, speed = 0): Promise<{ ms: number; deleteMs: number }> {
  await stack.labVm({ vmId, disks: 1, ...layout(dataMiB, kind) });
  const request: LiveMergeRequest = {
    snapshotId: `snap-${vmId}`, vmId, hostId: HOST_ID,
    disks: [{ diskId: 'disk0', baseVolumeId: 'd0v0', topVolumeId: 'd0v1' }],
    options: { pollIntervalMs: 500, bandwidthBytesPerSec: speed },
  };
  const t0 = performance.now();
  const handle = await stack.srv.client.workflow.start('LiveMergeWorkflow', { taskQueue: ENGINE_TASK_QUEUE, workflowId: liveMergeWorkflowId(request.snapshotId), args: [request] });
  await handle.result();
  const ms = performance.now() - t0;
  const deleteMs = await activityMs(stack, diskMergeWorkflowId(request.snapshotId, 'disk0'), 'deleteVolume');
  await destroyVm(stack, vmId);
  return { ms, deleteMs };
}

/** Started to completed of an activity, from the workflow history (server timestamps). */
async function activityMs(stack: QemuStack, workflowId: string, activityType: string): Promise<number> {
  const events = (await stack.srv.client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
  const at = (e: (typeof events)[number]): number => Number(e.eventTime?.seconds ?? 0) * 1000 + (e.eventTime?.nanos ?? 0) / 1e6;
  const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === activityType);
  const id = Number(scheduled?.eventId ?? -1);
  const started = events.find((e) => Number(e.activityTaskStartedEventAttributes?.scheduledEventId ?? -2) === id);
  const completed = events.find((e) => Number(e.activityTaskCompletedEventAttributes?.scheduledEventId ?? -2) === id);
  return started && completed ? Math.round(at(completed) - at(started)) : NaN;
}

import { Worker } from '@temporalio/worker';

import { formatNodeName, type LabCache } from '../lab/vm';
import { diskMergeWorkflowId, ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../src/config/names';
import type { LiveMergeRequest } from '../src/domain/input';
import { noopActivities } from './baseline/activities';
import { BASELINE_ENGINE_QUEUE, baselineHostQueue, type BaselineShape } from './baseline/workflows';
import { rawCommit } from './raw-commit';
import { type Bench, type BenchContext, bundle, type Figure, median, MiB, round, sleep } from './support/common';
import { mergePhases, type Phases } from './support/phases';
import { destroyVm, HOST_ID, type QemuStack, startQemuStack } from './support/qemu-stack';

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
  cache: LabCache;
  /** Of workflowMs: the deleteVolume step (checks, flush of the base, detach, rename of the top). */
  deleteMs: number;
  /** After the workflow's end: until the top's space was freed (its unlink, in the background). */
  reclaimMs: number;
  /** Where the workflow's time went (see mergePhases). */
  phases?: Phases;
}

export const overheadBench: Bench = {
  name: 'overhead',
  title: 'Overhead vs raw block commit (real QEMU)',
  async run(ctx: BenchContext) {
    // cache=writeback (QEMU's default): QEMU copies through the host page cache, at memory speed
    // (about 1.5-2 GB/s here). cache=none (O_DIRECT, libvirt's cache='none', what shared storage and
    // live migration need): at the disk's speed. The last row limits both sides to 256 MiB/s, the
    // speed of ordinary storage, to show the ratio where commits take seconds.
    const plan: Array<{ dataMiB: number; reps: number; limitMiBps: number; cache: LabCache }> = ctx.quick
      ? [{ dataMiB: 64, reps: 3, limitMiBps: 0, cache: 'writeback' }]
      : [
          { dataMiB: 64, reps: 3, limitMiBps: 0, cache: 'writeback' },
          { dataMiB: 256, reps: 3, limitMiBps: 0, cache: 'writeback' },
          { dataMiB: 1024, reps: 3, limitMiBps: 0, cache: 'writeback' },
          { dataMiB: 1024, reps: 3, limitMiBps: 0, cache: 'none' },
          { dataMiB: 1024, reps: 2, limitMiBps: 256, cache: 'writeback' },
        ];
    const stack = await startQemuStack('ovh');
    const samples: Sample[] = [];
    let floorMs: number[];
    let floorPhases: Phases[];
    let engineFloorMs: number[];
    let engineFloorPhases: Phases[];
    let n = 0;
    try {
      ({ ms: floorMs, phases: floorPhases } = await sameShapeNoop(stack, ctx.quick ? 3 : 7, 'host'));
      for (const p of floorPhases) ctx.log(`    ${formatPhases(p)}`);
      ctx.log(`  same-shape no-op workflow: ${floorMs.map((ms) => ms.toFixed(0)).join(', ')} ms`);
      ({ ms: engineFloorMs, phases: engineFloorPhases } = await sameShapeNoop(stack, ctx.quick ? 3 : 7, 'engine'));
      ctx.log(`  the shape before disk-on-host, no-op: ${engineFloorMs.map((ms) => ms.toFixed(0)).join(', ')} ms`);
      // A first merge warms the workers (bundle loaded, connections up), as in a running product.
      await workflowCommit(stack, 'warm', { dataMiB: 2, kind: 'intermediate', speed: 0, cache: 'writeback' });
      for (const { dataMiB, reps, limitMiBps, cache } of plan) {
        for (const kind of ['intermediate', 'active'] as Kind[]) {
          for (let rep = 0; rep < reps; rep++) {
            // Alternate which goes first, so neither always meets a warmer page cache.
            const order = rep % 2 === 0 ? ['raw', 'workflow'] : ['workflow', 'raw'];
            const s: Sample = {
              dataMiB,
              limitMiBps,
              cache,
              kind,
              rep,
              rawMs: 0,
              workflowMs: 0,
              deleteMs: 0,
              reclaimMs: 0,
            };
            const setup = { dataMiB, kind, speed: limitMiBps * MiB, cache };
            for (const who of order) {
              const vmId = `o${n++}`;
              if (who === 'raw') s.rawMs = await rawOn(stack, vmId, setup);
              else
                ({
                  ms: s.workflowMs,
                  deleteMs: s.deleteMs,
                  reclaimMs: s.reclaimMs,
                  phases: s.phases,
                } = await workflowCommit(stack, vmId, setup));
            }
            samples.push(s);
            if (s.phases) ctx.log(`    ${formatPhases(s.phases)}`);
            ctx.log(
              `  ${rowLabel(s)} ${kind} #${rep + 1}: raw ${s.rawMs.toFixed(0)} ms, workflow ${s.workflowMs.toFixed(0)} ms (delete step ${s.deleteMs} ms, then space freed in ${s.reclaimMs} ms), ratio ${(s.workflowMs / s.rawMs).toFixed(3)}`,
            );
          }
        }
      }
    } finally {
      await stack.close();
    }
    const figures: Figure[] = [];
    const ofRow = (row: (typeof plan)[number]): Sample[] =>
      samples.filter((s) => s.dataMiB === row.dataMiB && s.limitMiBps === row.limitMiBps && s.cache === row.cache);
    for (const row of plan) {
      for (const kind of ['intermediate', 'active'] as Kind[]) {
        const ss = ofRow(row).filter((s) => s.kind === kind);
        const raw = median(ss.map((s) => s.rawMs));
        const wf = median(ss.map((s) => s.workflowMs));
        const ratio = round(median(ss.map((s) => s.workflowMs / s.rawMs)), 3);
        figures.push({
          metric: `${kind} commit, ${rowLabel(row)}: LiveMergeWorkflow end to end`,
          value: Math.round(wf),
          unit: 'ms',
          baseline: Math.round(raw),
          baselineLabel: 'bare QMP script',
          ratio,
          ...(row.dataMiB >= 1024 ? { target: 'ratio <= 1.10', met: ratio <= 1.1 } : {}),
        });
      }
    }
    // What the orchestration adds, whatever the data: workflow minus raw, over every sample.
    const added = samples.map((s) => s.workflowMs - s.rawMs);
    const floor = median(floorMs);
    figures.push({
      metric: 'time added to a commit (workflow - raw), median of all runs',
      value: Math.round(median(added)),
      unit: 'ms',
      baseline: Math.round(floor),
      baselineLabel: 'a no-op workflow of the same shape',
      ratio: round(median(added) / floor, 3),
      target: '<= 80 ms',
      met: median(added) <= 80,
    });
    figures.push({
      metric: 'a no-op workflow of the shape before disk-on-host (children on the engine, every step an activity)',
      value: Math.round(median(engineFloorMs)),
      unit: 'ms',
      baseline: Math.round(floor),
      baselineLabel: 'the same, children on the host queue',
      ratio: round(median(engineFloorMs) / floor, 3),
    });
    // The added time, split at the block job: what comes before it starts, and after it ends.
    const withPhases = samples.filter((s): s is Sample & { phases: Phases } => s.phases !== undefined);
    const sum = (p: Phases, keys: string[]): number => keys.reduce((t, k) => t + (p[k] ?? 0), 0);
    const before = [
      'client start call',
      'parent task, child start',
      'child task, merge dispatch',
      'child pickup',
      'merge',
    ];
    const after = (p: Phases): string[] => Object.keys(p).slice(Object.keys(p).indexOf('wait (the block job)') + 1);
    figures.push({
      metric: "of which before the block job starts (start call, both workflows' first tasks, merge step)",
      value: Math.round(median(withPhases.map((s) => sum(s.phases, before)))),
      unit: 'ms',
    });
    figures.push({
      metric: 'of which after the block job ends (verify, delete, cleanup, both completions, result)',
      value: Math.round(median(withPhases.map((s) => sum(s.phases, after(s.phases))))),
      unit: 'ms',
    });
    // The best ratio any workflow of this shape could reach on this server: raw plus the no-op floor.
    for (const row of plan.filter((p) => p.dataMiB >= 1024 && p.limitMiBps === 0)) {
      const ss = ofRow(row);
      const raw = median(ss.map((s) => s.rawMs));
      figures.push({
        metric: `lowest ratio this workflow shape allows here, ${rowLabel(row)}: (raw + no-op floor) / raw`,
        value: round((raw + floor) / raw, 3),
        unit: '',
      });
    }
    for (const row of plan.filter((p) => p.limitMiBps === 0)) {
      const ss = ofRow(row);
      figures.push({
        metric: `of which the delete step (checks, detach, rename of the top), ${rowLabel(row)}`,
        value: Math.round(median(ss.map((s) => s.deleteMs))),
        unit: 'ms',
      });
    }
    for (const row of plan.filter((p) => p.limitMiBps === 0)) {
      const ss = ofRow(row);
      figures.push({
        metric: `not in it: the top's space freed after the workflow's end (background unlink), ${rowLabel(row)}`,
        value: Math.round(median(ss.map((s) => s.reclaimMs))),
        unit: 'ms',
      });
    }
    return {
      figures,
      details: {
        samples,
        sameShapeNoopMs: floorMs.map((ms) => Math.round(ms)),
        sameShapeNoopPhases: floorPhases,
        engineShapeNoopMs: engineFloorMs.map((ms) => Math.round(ms)),
        engineShapeNoopPhases: engineFloorPhases,
        addedMs: {
          p50: Math.round(median(added)),
          min: Math.round(Math.min(...added)),
          max: Math.round(Math.max(...added)),
        },
        note: 'ratio = median over reps of workflow/raw; workflow time is client start to result (merge, wait, verify, delete, cleanup); raw time is block-commit sent to BLOCK_JOB_COMPLETED; reclaimMs is after the workflow result, until the deleted top was unlinked (the next run waits for it, so it never overlaps a measurement)',
      },
    };
  },
};

interface Setup {
  dataMiB: number;
  kind: Kind;
  /** block-commit `speed`, bytes/s; 0 is none. */
  speed: number;
  cache: LabCache;
}

function formatPhases(p: Phases): string {
  return Object.entries(p)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}

function rowLabel(r: { dataMiB: number; limitMiBps: number; cache: LabCache }): string {
  return `${r.dataMiB} MiB${r.limitMiBps ? ` at ${r.limitMiBps} MiB/s` : ''}, cache=${r.cache}`;
}

function layout(dataMiB: number, kind: Kind) {
  // Every lab layer writes layerDataMiB twice (its own region and the shared one): the top holds D MiB.
  const layerDataMiB = Math.max(1, Math.round(dataMiB / 2));
  const volumes = kind === 'intermediate' ? 3 : 2;
  return { layerDataMiB, volumes, sizeMiB: (volumes + 1) * layerDataMiB + 8 };
}

async function rawOn(stack: QemuStack, vmId: string, { dataMiB, kind, speed, cache }: Setup): Promise<number> {
  const vm = await stack.labVm({ vmId, disks: 1, cache, ...layout(dataMiB, kind) });
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

async function workflowCommit(
  stack: QemuStack,
  vmId: string,
  { dataMiB, kind, speed, cache }: Setup,
): Promise<{ ms: number; deleteMs: number; reclaimMs: number; phases: Phases }> {
  await stack.labVm({ vmId, disks: 1, cache, ...layout(dataMiB, kind) });
  const request: LiveMergeRequest = {
    snapshotId: `snap-${vmId}`,
    vmId,
    hostId: HOST_ID,
    disks: [{ diskId: 'disk0', baseVolumeId: 'd0v0', topVolumeId: 'd0v1' }],
    options: { pollIntervalMs: 500, bandwidthBytesPerSec: speed },
  };
  const wall0 = Date.now();
  const t0 = performance.now();
  const handle = await stack.srv.client.workflow.start('LiveMergeWorkflow', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId(request.snapshotId),
    args: [request],
  });
  await handle.result();
  const ms = performance.now() - t0;
  const wallEnd = Date.now();
  await stack.reclaimer.drain();
  const reclaimMs = Math.round(performance.now() - t0 - ms);
  const childId = diskMergeWorkflowId(request.snapshotId, 'disk0');
  const phases = await mergePhases(stack.srv.client, liveMergeWorkflowId(request.snapshotId), childId, wall0, wallEnd);
  await destroyVm(stack, vmId);
  return { ms, deleteMs: phases.delete, reclaimMs, phases };
}

/**
 * Temporal's own cost of the product's workflow shape on this server: a parent, one child, five
 * no-op steps (bench/baseline), one at a time; `host`, the shape now (the child on the host's
 * queue, its short steps local), or `engine`, the shape before `disk-on-host`. Gaps between runs
 * as between the merges (a lab VM is created in between): back-to-back starts are slower on the
 * dev server.
 */
async function sameShapeNoop(
  stack: QemuStack,
  runs: number,
  shape: BaselineShape,
): Promise<{ ms: number[]; phases: Phases[] }> {
  const { connection, client, server } = stack.srv;
  const baselineBundle = await bundle(require.resolve('./baseline/workflows'));
  const workers = [
    await Worker.create({
      connection,
      namespace: server.namespace,
      taskQueue: BASELINE_ENGINE_QUEUE,
      workflowBundle: baselineBundle,
    }),
    await Worker.create({
      connection,
      namespace: server.namespace,
      taskQueue: baselineHostQueue(HOST_ID),
      activities: noopActivities,
      ...(shape === 'host' ? { workflowBundle: baselineBundle } : {}),
    }),
  ];
  const running = workers.map((w) => w.run());
  const ms: number[] = [];
  const phases: Phases[] = [];
  try {
    for (let i = 0; i <= runs; i++) {
      await sleep(1500);
      const wall0 = Date.now();
      const t0 = performance.now();
      const workflowId = `noop-${shape}-${i}`;
      const handle = await client.workflow.start('BaselineMergeWorkflow', {
        taskQueue: BASELINE_ENGINE_QUEUE,
        workflowId,
        args: [{ hostId: HOST_ID, disks: ['disk0'], shape }],
      });
      await handle.result();
      if (i === 0) continue; // the first warms the workers
      ms.push(performance.now() - t0);
      const steps = ['noopMerge', 'noopWait', 'noopVerify', 'noopDelete', 'noopCleanup'];
      phases.push(await mergePhases(client, workflowId, `${workflowId}-disk-disk0`, wall0, Date.now(), steps));
    }
  } finally {
    for (const w of workers) w.shutdown();
    await Promise.allSettled(running);
  }
  return { ms, phases };
}

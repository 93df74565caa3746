import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../src/config/names';
import type { LiveMergeRequest } from '../src/domain/input';
import { formatNodeName } from '../src/lab/vm';
import { HOST_ID, destroyVm, startQemuStack, type QemuStack } from './support/qemu-stack';
import { median, round, type Bench, type BenchContext, type Figure } from './support/common';
import { rawCommit } from './raw-commit';

/**
 * Overhead vs raw commit, on real QEMU: a top volume with D MiB of written data, committed once by
 * a bare QMP script (start, wait for the event, done) and once by the full LiveMergeWorkflow on the
 * dev server (merge, wait, verify, delete, cleanup), each on a fresh lab VM with the same data.
 */

type Kind = 'intermediate' | 'active';

interface Sample {
  dataMiB: number;
  kind: Kind;
  rep: number;
  rawMs: number;
  workflowMs: number;
}

export const overheadBench: Bench = {
  name: 'overhead',
  title: 'Overhead vs raw block commit (real QEMU)',
  async run(ctx: BenchContext) {
    const plan: Array<{ dataMiB: number; reps: number }> = ctx.quick
      ? [{ dataMiB: 64, reps: 1 }]
      : [{ dataMiB: 64, reps: 3 }, { dataMiB: 256, reps: 3 }, { dataMiB: 1024, reps: 2 }];
    const stack = await startQemuStack('ovh');
    const samples: Sample[] = [];
    let n = 0;
    try {
      // A first merge warms the workers (bundle loaded, connections up), as in a running product.
      await workflowCommit(stack, `warm`, 2, 'intermediate');
      for (const { dataMiB, reps } of plan) {
        for (const kind of ['intermediate', 'active'] as Kind[]) {
          for (let rep = 0; rep < reps; rep++) {
            // Alternate which goes first, so neither always meets a warmer page cache.
            const order = rep % 2 === 0 ? ['raw', 'workflow'] : ['workflow', 'raw'];
            const s: Sample = { dataMiB, kind, rep, rawMs: 0, workflowMs: 0 };
            for (const who of order) {
              const vmId = `o${n++}`;
              if (who === 'raw') s.rawMs = await rawOn(stack, vmId, dataMiB, kind);
              else s.workflowMs = await workflowCommit(stack, vmId, dataMiB, kind);
            }
            samples.push(s);
            ctx.log(`  ${dataMiB} MiB ${kind} #${rep + 1}: raw ${s.rawMs.toFixed(0)} ms, workflow ${s.workflowMs.toFixed(0)} ms, ratio ${(s.workflowMs / s.rawMs).toFixed(3)}`);
          }
        }
      }
    } finally {
      await stack.close();
    }
    const figures: Figure[] = [];
    for (const { dataMiB } of plan) {
      for (const kind of ['intermediate', 'active'] as Kind[]) {
        const ss = samples.filter((s) => s.dataMiB === dataMiB && s.kind === kind);
        const raw = median(ss.map((s) => s.rawMs));
        const wf = median(ss.map((s) => s.workflowMs));
        const ratio = round(median(ss.map((s) => s.workflowMs / s.rawMs)), 3);
        figures.push({
          metric: `${kind} commit, ${dataMiB} MiB: LiveMergeWorkflow end to end`,
          value: Math.round(wf), unit: 'ms',
          baseline: Math.round(raw), baselineLabel: 'bare QMP script',
          ratio,
          ...(dataMiB >= 1024 ? { target: 'ratio <= 1.10', met: ratio <= 1.1 } : {}),
        });
      }
    }
    return { figures, details: { samples, note: 'ratio = median over reps of workflow/raw; workflow time is client start to result, including verify, delete and cleanup' } };
  },
};

function layout(dataMiB: number, kind: Kind) {
  // Every lab layer writes layerDataMiB twice (its own region and the shared one): the top holds D MiB.
  const layerDataMiB = Math.max(1, Math.round(dataMiB / 2));
  const volumes = kind === 'intermediate' ? 3 : 2;
  return { layerDataMiB, volumes, sizeMiB: (volumes + 1) * layerDataMiB + 8 };
}

async function rawOn(stack: QemuStack, vmId: string, dataMiB: number, kind: Kind): Promise<number> {
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
  });
  await destroyVm(stack, vmId);
  return ms;
}

async function workflowCommit(stack: QemuStack, vmId: string, dataMiB: number, kind: Kind): Promise<number> {
  await stack.labVm({ vmId, disks: 1, ...layout(dataMiB, kind) });
  const request: LiveMergeRequest = {
    snapshotId: `snap-${vmId}`, vmId, hostId: HOST_ID,
    disks: [{ diskId: 'disk0', baseVolumeId: 'd0v0', topVolumeId: 'd0v1' }],
  };
  const t0 = performance.now();
  const handle = await stack.srv.client.workflow.start('LiveMergeWorkflow', { taskQueue: ENGINE_TASK_QUEUE, workflowId: liveMergeWorkflowId(request.snapshotId), args: [request] });
  await handle.result();
  const ms = performance.now() - t0;
  await destroyVm(stack, vmId);
  return ms;
}

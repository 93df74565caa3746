import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

import { checkGuestWrites, parseAckLine, readAckLog } from '../lab/guest';
import { labDiskId, labVolumeId, stopLabVm } from '../lab/vm';
import { blockJobId, ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../src/config/names';
import type { LiveMergeRequest } from '../src/domain/input';
import { auxQmpSocketPath } from '../src/domain/layout';
import { QmpClient } from '../src/drivers/qmp/client';
import { type Bench, type BenchContext, type Figure, MiB, percentile, round, sleep } from './support/common';
import { HOST_ID, startQemuStack } from './support/qemu-stack';

/**
 * The guest's view of a merge: a lab VM running the lab guest, whose writer writes 4 KiB records
 * with O_DIRECT | O_DSYNC as fast as it goes (no rate limit), one disk of 4 volumes opened with
 * cache=none (O_DIRECT on the host, as libvirt's cache='none'). In one run: the guest idle (no
 * block job), then three merges by the product, one after the other: an unlimited intermediate
 * commit (v1 into v0), one limited to 32 MiB/s (v2 into v0), an unlimited active commit with pivot
 * (v3 into v0), then idle again. Each layer holds L MiB of data and the lab's overwrite region (full 512, quick 128), so a commit copies 2 L.
 *
 * Per-write figures come from the guest: each ACK line carries the guest's CLOCK_MONOTONIC when the
 * write returned and how long the pwrite() took (lab/guest/writer.c), so neither the serial port nor
 * the host's scheduling is in them. A write belongs to a commit's window when its ACK line reached
 * the ACK log between QEMU's JOB_STATUS_CHANGE events `running` and `concluded` of that job (the
 * log's size is read as each event arrives on the VM's second QMP monitor). Throughput is the
 * window's writes over its span on the guest's clock. The baseline is the idle windows before and
 * after the merges, pooled, in the same run on the same VM.
 */

const TARGET_THROUGHPUT = 0.7;
const TARGET_P99 = 3;
const LIMIT = 32 * MiB;

interface Window {
  name: string;
  label: string;
  startByte: number;
  endByte: number;
}

interface WindowStats {
  name: string;
  label: string;
  writes: number;
  spanSec: number;
  writesPerSec: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

export const guestViewBench: Bench = {
  name: 'guest-view',
  title: "The guest's view: write throughput and latency during merges, against idle",
  async run(ctx: BenchContext) {
    const layerDataMiB = ctx.quick ? 128 : 512;
    const idleMs = ctx.quick ? 5000 : 15_000;
    const stack = await startQemuStack('gv');
    const vmId = 'gview';
    const windows: Window[] = [];
    try {
      const volumes = 4;
      const vm = await stack.labVm({
        vmId,
        disks: 1,
        volumes,
        layerDataMiB,
        cache: 'none',
        sizeMiB: (volumes + 1) * layerDataMiB + 64,
        guest: { rate: 0, regionMiB: 64 },
      });
      const ackLog = vm.guest?.ackLog;
      if (!ackLog) throw new Error('the lab VM has no guest');
      const size = (): number => {
        try {
          return statSync(ackLog).size;
        } catch {
          return 0;
        }
      };
      // Past the boot and the first writes.
      for (let i = 0; i < 600 && (await readAckLog(ackLog)).lines.length < 1000; i++) await sleep(100);
      await sleep(1000);

      const events = await QmpClient.connect(auxQmpSocketPath(stack.runDir, vmId));
      const jobStart = new Map<string, number>();
      const jobEnd = new Map<string, number>();
      events.onEvent((e) => {
        const data = e.data as { id?: string; status?: string } | undefined;
        if (e.event !== 'JOB_STATUS_CHANGE' || !data?.id) return;
        if (data.status === 'running' && !jobStart.has(data.id)) jobStart.set(data.id, size());
        if (data.status === 'concluded') jobEnd.set(data.id, size());
      });

      const idle = async (name: string): Promise<void> => {
        const startByte = size();
        await sleep(idleMs);
        windows.push({ name, label: 'idle', startByte, endByte: size() });
      };
      const merge = async (name: string, label: string, top: number, bandwidthBytesPerSec: number): Promise<void> => {
        const d = 0;
        const request: LiveMergeRequest = {
          snapshotId: `${vmId}-${name}`,
          vmId,
          hostId: HOST_ID,
          disks: [{ diskId: labDiskId(d), baseVolumeId: labVolumeId(d, 0), topVolumeId: labVolumeId(d, top) }],
          options: { bandwidthBytesPerSec },
        };
        const t0 = Date.now();
        const handle = await stack.srv.client.workflow.start('LiveMergeWorkflow', {
          taskQueue: ENGINE_TASK_QUEUE,
          workflowId: liveMergeWorkflowId(request.snapshotId),
          args: [request],
        });
        await handle.result();
        const jobId = blockJobId(labDiskId(d), labVolumeId(d, top));
        const startByte = jobStart.get(jobId);
        const endByte = jobEnd.get(jobId);
        if (startByte === undefined || endByte === undefined) throw new Error(`no job events for ${jobId}`);
        windows.push({ name, label, startByte, endByte });
        ctx.log(`  ${label}: merge took ${Date.now() - t0} ms`);
        await sleep(2000); // the top's space freed, the host's disk quiet again
      };

      try {
        await idle('idleBefore');
        await merge('intermediate', 'unlimited intermediate commit', 1, 0);
        await merge('limited', 'intermediate commit at 32 MiB/s', 2, LIMIT);
        await merge('active', 'unlimited active commit (pivot)', 3, 0);
        await idle('idleAfter');
      } finally {
        await events.close();
      }
      // The guest stops cleanly; every acknowledged write must be on the merged disk.
      await stopLabVm(stack.runDir, vmId);
      const report = await checkGuestWrites(stack.runDir, vmId);
      if (!report.ok)
        throw new Error(`the guest lost writes: ${report.problems.map((p) => `${p.kind} ${p.detail}`).join('; ')}`);
      const acks = await ackWindows(ackLog, windows);
      const idleStats = stats(
        'idle',
        'idle (before and after, pooled)',
        acks.filter((w) => w.name.startsWith('idle')),
      );
      const phases = acks.filter((w) => !w.name.startsWith('idle')).map((w) => stats(w.name, w.label, [w]));
      for (const s of [idleStats, ...phases])
        ctx.log(
          `  ${s.label}: ${s.writes} writes in ${s.spanSec} s, ${s.writesPerSec} writes/s, p50 ${s.p50Us} us, p99 ${s.p99Us} us`,
        );
      const figures: Figure[] = [
        { metric: 'idle guest: 4 KiB O_DIRECT|O_DSYNC writes/s', value: idleStats.writesPerSec, unit: 'writes/s' },
        {
          metric: 'idle guest: write latency p50 / p99',
          value: idleStats.p50Us / 1000,
          unit: 'ms',
          baseline: idleStats.p99Us / 1000,
          baselineLabel: 'p99',
        },
      ];
      for (const p of phases) {
        const limited = p.name === 'limited';
        const tRatio = round(p.writesPerSec / idleStats.writesPerSec, 2);
        const p99Ratio = round(p.p99Us / idleStats.p99Us, 2);
        figures.push(
          {
            metric: `${p.label}: guest writes/s`,
            value: p.writesPerSec,
            unit: 'writes/s',
            baseline: idleStats.writesPerSec,
            baselineLabel: 'idle',
            ratio: tRatio,
            ...(limited ? { target: `>= ${TARGET_THROUGHPUT}`, met: tRatio >= TARGET_THROUGHPUT } : {}),
          },
          {
            metric: `${p.label}: write latency p50`,
            value: p.p50Us / 1000,
            unit: 'ms',
            baseline: idleStats.p50Us / 1000,
            baselineLabel: 'idle',
            ratio: round(p.p50Us / idleStats.p50Us, 2),
          },
          {
            metric: `${p.label}: write latency p99`,
            value: p.p99Us / 1000,
            unit: 'ms',
            baseline: idleStats.p99Us / 1000,
            baselineLabel: 'idle',
            ratio: p99Ratio,
            ...(limited ? { target: `<= ${TARGET_P99}`, met: p99Ratio <= TARGET_P99 } : {}),
          },
        );
      }
      return {
        figures,
        details: {
          layerDataMiB,
          idleMs,
          cache: 'none',
          guestRate: 'unlimited',
          windows: [idleStats, ...phases],
          guestCheck: report.disks.map((d) => ({
            acknowledged: d.acknowledged,
            offsetsAcknowledged: d.offsetsAcknowledged,
            found: d.found,
            lost: d.lost,
            chain: d.chain,
          })),
        },
      };
    } finally {
      await stack.close();
    }
  },
};

interface AckWindow extends Window {
  /** [guest time µs, latency µs] of each ACK in the window. */
  acks: Array<[number, number]>;
}

/** Each window's ACKs: the ACK lines whose bytes lie between the window's log offsets. */
async function ackWindows(ackLog: string, windows: Window[]): Promise<AckWindow[]> {
  const text = await readFile(ackLog, 'latin1');
  const lines: Array<{ end: number; tUs: number; latUs: number }> = [];
  let pos = 0;
  for (const raw of text.split('\n')) {
    pos += raw.length + 1;
    const parsed = parseAckLine(raw.replace(/\r+$/, ''));
    if (parsed.ok && parsed.value.kind === 'ACK' && parsed.value.tUs !== undefined && parsed.value.latUs !== undefined)
      lines.push({ end: pos, tUs: parsed.value.tUs, latUs: parsed.value.latUs });
  }
  if (lines.length === 0)
    throw new Error('the ACK log has no timed ACK lines: is the guest built from the current writer.c?');
  return windows.map((w) => ({
    ...w,
    acks: lines.filter((l) => l.end > w.startByte && l.end <= w.endByte).map((l) => [l.tUs, l.latUs]),
  }));
}

function stats(name: string, label: string, windows: AckWindow[]): WindowStats {
  const latencies = windows.flatMap((w) => w.acks.map(([, lat]) => lat));
  // Writes per second on the guest's clock: each window's writes after its first, over its span.
  let writes = 0;
  let span = 0;
  for (const w of windows) {
    if (w.acks.length < 2) continue;
    writes += w.acks.length - 1;
    span += (w.acks[w.acks.length - 1][0] - w.acks[0][0]) / 1e6;
  }
  return {
    name,
    label,
    writes: latencies.length,
    spanSec: round(span, 2),
    writesPerSec: span > 0 ? round(writes / span, 1) : 0,
    p50Us: percentile(latencies, 50),
    p99Us: percentile(latencies, 99),
    maxUs: latencies.length ? Math.max(...latencies) : NaN,
  };
}

import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

import { checkGuestWrites, parseAckLine, readAckLog } from '../lab/guest';
import { labDiskId, labVolumeId, stopLabVm } from '../lab/vm';
import { blockJobId, ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../src/config/names';
import type { LiveMergeRequest } from '../src/domain/input';
import { auxQmpSocketPath } from '../src/domain/layout';
import { QmpClient } from '../src/drivers/qmp/client';
import { type Bench, type BenchContext, type Figure, MiB, percentile, round, sleep } from './support/common';
import { destroyVm, HOST_ID, type QemuStack, startQemuStack } from './support/qemu-stack';

/**
 * The guest's view of a merge: a lab VM running the lab guest, whose writer writes 4 KiB records
 * with O_DIRECT | O_DSYNC, one disk opened with cache=none (O_DIRECT on the host, as libvirt's
 * cache='none'). Three VMs, one after the other: a guest writing as fast as it goes, one writing a
 * steady 200 records/s, and an idle one (paused, no guest I/O). Each: idle windows (no block job)
 * before and after; intermediate commits (v1, v2, ... into v0) unlimited, (the fast guest only) at
 * 32 MiB/s, and adaptive; then an unlimited active commit with pivot and an adaptive one. Each
 * layer holds L MiB of data and the lab's overwrite region (full 512, quick 128).
 *
 * Per-write figures come from the guest: each ACK line carries the guest's CLOCK_MONOTONIC when the
 * write returned and how long the pwrite() took (lab/guest/writer.c), so neither the serial port nor
 * the host's scheduling is in them. A write belongs to a commit's window when its ACK line reached
 * the ACK log between QEMU's JOB_STATUS_CHANGE events `running` and `concluded` of that job (the
 * log's size is read as each event arrives on the VM's second QMP monitor); the same events time
 * the commit. Throughput is the window's writes over its span on the guest's clock. The baseline is
 * the idle windows before and after the merges, pooled, in the same run on the same VM; a commit's
 * time is compared with the unlimited commit of its kind on the same VM.
 */

const TARGET_THROUGHPUT = 0.7;
const TARGET_P99 = 3;
const LIMIT = 32 * MiB;
/** The adaptive mode's goals (issue 23): the guest's view, and the commit's time against unlimited. */
const ADAPTIVE_THROUGHPUT = 0.8;
const ADAPTIVE_P99 = 2;
const ADAPTIVE_TIME_IDLE = 1.2;
const ADAPTIVE_TIME_BUSY = 4;

type SpeedChoice = 'unlimited' | 'limited' | 'adaptive';

interface MergeSpec {
  name: string;
  label: string;
  top: number;
  base: number;
  speed: SpeedChoice;
  kind: 'intermediate' | 'active';
}

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

/** A commit as the host saw it: QEMU's events `running` to `concluded`, and the job's length. */
interface CommitTime {
  name: string;
  label: string;
  kind: 'intermediate' | 'active';
  speed: SpeedChoice;
  seconds: number;
  lenBytes: number;
}

interface Scenario {
  key: string;
  /** The guest's write rate (records/s; 0 is as fast as it goes), or none: the VM paused, no guest I/O. */
  guestRate: number | 'none';
  volumes: number;
  merges: MergeSpec[];
}

const optionsOf = (speed: SpeedChoice): LiveMergeRequest['options'] =>
  speed === 'adaptive'
    ? { speedMode: 'adaptive' }
    : speed === 'limited'
      ? { bandwidthBytesPerSec: LIMIT }
      : { speedMode: 'fixed' };

/** Intermediate commits first (v1, v2, ... into v0), then active ones (each top into the one below). */
function scenario(key: string, guestRate: number | 'none', withLimited: boolean): Scenario {
  const merges: MergeSpec[] = [];
  const inter: SpeedChoice[] = withLimited ? ['unlimited', 'limited', 'adaptive'] : ['unlimited', 'adaptive'];
  inter.forEach((speed, i) =>
    merges.push({
      name: `${speed}Intermediate`,
      label: `${speed} intermediate commit`,
      top: i + 1,
      base: 0,
      speed,
      kind: 'intermediate',
    }),
  );
  const volumes = inter.length + 1 + 2 + 1;
  // The last two volumes' tops: unlimited commits the active layer into the one below, adaptive that into the next.
  merges.push({
    name: 'unlimitedActive',
    label: 'unlimited active commit (pivot)',
    top: volumes - 1,
    base: volumes - 2,
    speed: 'unlimited',
    kind: 'active',
  });
  merges.push({
    name: 'adaptiveActive',
    label: 'adaptive active commit (pivot)',
    top: volumes - 2,
    base: volumes - 3,
    speed: 'adaptive',
    kind: 'active',
  });
  for (const m of merges) if (m.speed === 'limited') m.label = 'intermediate commit at 32 MiB/s';
  return { key, guestRate, volumes, merges };
}

const GUESTS: Array<{ scenario: Scenario; who: string }> = [
  { scenario: scenario('fast', 0, true), who: 'guest writing as fast as it can' },
  { scenario: scenario('steady', 200, false), who: 'guest writing 200 records/s' },
  { scenario: scenario('idle', 'none', false), who: 'idle guest' },
];

export const guestViewBench: Bench = {
  name: 'guest-view',
  title: "The guest's view: write throughput and latency during merges, against idle",
  async run(ctx: BenchContext) {
    const layerDataMiB = ctx.quick ? 128 : 512;
    const idleMs = ctx.quick ? 5000 : 15_000;
    const stack = await startQemuStack('gv');
    try {
      const figures: Figure[] = [];
      const details: Record<string, unknown> = { layerDataMiB, idleMs, cache: 'none' };
      // The quick run (CI's) is a smoke test: the fast guest only.
      for (const { scenario: sc, who } of ctx.quick ? GUESTS.slice(0, 1) : GUESTS) {
        const out = await runScenario(ctx, stack, sc, layerDataMiB, idleMs);
        figures.push(
          ...guestFigures(sc, who, out.idle, out.phases),
          ...timeFigures(who, out.times, sc.guestRate === 'none'),
        );
        details[sc.key] = {
          guestRate: sc.guestRate,
          windows: out.idle ? [out.idle, ...out.phases] : [],
          commits: out.times,
          guestCheck: out.guestCheck,
        };
      }
      return { figures, details };
    } finally {
      await stack.close();
    }
  },
};

async function runScenario(ctx: BenchContext, stack: QemuStack, sc: Scenario, layerDataMiB: number, idleMs: number) {
  const vmId = `gview-${sc.key}`;
  const windows: Window[] = [];
  const times: CommitTime[] = [];
  const vm = await stack.labVm({
    vmId,
    disks: 1,
    volumes: sc.volumes,
    layerDataMiB,
    cache: 'none',
    sizeMiB: (sc.volumes + 1) * layerDataMiB + 64,
    ...(sc.guestRate === 'none' ? {} : { guest: { rate: sc.guestRate, regionMiB: 64 } }),
  });
  const ackLog = vm.guest?.ackLog;
  const size = (): number => {
    try {
      return ackLog ? statSync(ackLog).size : 0;
    } catch {
      return 0;
    }
  };
  // Past the boot and the first writes.
  if (ackLog) {
    for (let i = 0; i < 600 && (await readAckLog(ackLog)).lines.length < 1000; i++) await sleep(100);
    await sleep(1000);
  }

  const events = await QmpClient.connect(auxQmpSocketPath(stack.runDir, vmId));
  const jobStart = new Map<string, { byte: number; at: number }>();
  const jobEnd = new Map<string, { byte: number; at: number }>();
  const jobLen = new Map<string, number>();
  events.onEvent((e) => {
    const data = e.data as { id?: string; status?: string; device?: string; len?: number } | undefined;
    if (e.event === 'BLOCK_JOB_COMPLETED' && data?.device && data.len !== undefined) jobLen.set(data.device, data.len);
    if (e.event !== 'JOB_STATUS_CHANGE' || !data?.id) return;
    if (data.status === 'running' && !jobStart.has(data.id)) jobStart.set(data.id, { byte: size(), at: Date.now() });
    if (data.status === 'concluded') jobEnd.set(data.id, { byte: size(), at: Date.now() });
  });

  const idle = async (name: string): Promise<void> => {
    const startByte = size();
    await sleep(idleMs);
    windows.push({ name, label: 'idle', startByte, endByte: size() });
  };
  const merge = async (m: MergeSpec): Promise<void> => {
    const d = 0;
    const request: LiveMergeRequest = {
      snapshotId: `${vmId}-${m.name}`,
      vmId,
      hostId: HOST_ID,
      disks: [{ diskId: labDiskId(d), baseVolumeId: labVolumeId(d, m.base), topVolumeId: labVolumeId(d, m.top) }],
      options: optionsOf(m.speed),
    };
    const t0 = Date.now();
    const handle = await stack.srv.client.workflow.start('LiveMergeWorkflow', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: liveMergeWorkflowId(request.snapshotId),
      args: [request],
    });
    await handle.result();
    const jobId = blockJobId(labDiskId(d), labVolumeId(d, m.top));
    const start = jobStart.get(jobId);
    const end = jobEnd.get(jobId);
    if (start === undefined || end === undefined) throw new Error(`no job events for ${jobId}`);
    windows.push({ name: m.name, label: m.label, startByte: start.byte, endByte: end.byte });
    const seconds = round((end.at - start.at) / 1000, 2);
    times.push({
      name: m.name,
      label: m.label,
      kind: m.kind,
      speed: m.speed,
      seconds,
      lenBytes: jobLen.get(jobId) ?? 0,
    });
    ctx.log(`  ${sc.key}: ${m.label}: job ${seconds} s, merge ${Date.now() - t0} ms`);
    await sleep(2000); // the top's space freed, the host's disk quiet again
  };

  try {
    if (ackLog) await idle('idleBefore');
    for (const m of sc.merges) await merge(m);
    if (ackLog) await idle('idleAfter');
  } finally {
    await events.close();
  }
  // The guest stops cleanly; every acknowledged write must be on the merged disk.
  await stopLabVm(stack.runDir, vmId);
  let guestCheck: unknown;
  let idleStats: WindowStats | undefined;
  let phases: WindowStats[] = [];
  if (ackLog) {
    const report = await checkGuestWrites(stack.runDir, vmId);
    if (!report.ok)
      throw new Error(`the guest lost writes: ${report.problems.map((p) => `${p.kind} ${p.detail}`).join('; ')}`);
    guestCheck = report.disks.map((d) => ({
      acknowledged: d.acknowledged,
      offsetsAcknowledged: d.offsetsAcknowledged,
      found: d.found,
      lost: d.lost,
      chain: d.chain,
    }));
    const acks = await ackWindows(ackLog, windows);
    idleStats = stats(
      'idle',
      'idle (before and after, pooled)',
      acks.filter((w) => w.name.startsWith('idle')),
    );
    phases = acks.filter((w) => !w.name.startsWith('idle')).map((w) => stats(w.name, w.label, [w]));
    for (const s of [idleStats, ...phases])
      ctx.log(
        `  ${sc.key}: ${s.label}: ${s.writes} writes in ${s.spanSec} s, ${s.writesPerSec} writes/s, p50 ${s.p50Us} us, p99 ${s.p99Us} us`,
      );
  }
  await destroyVm(stack, vmId);
  return { idle: idleStats, phases, times, guestCheck };
}

/** The guest's writes/s and latency in each commit's window against its idle windows. */
function guestFigures(sc: Scenario, who: string, idle: WindowStats | undefined, phases: WindowStats[]): Figure[] {
  if (!idle) return [];
  const prefix = sc.key === 'fast' ? '' : `${who}: `;
  const figures: Figure[] = [
    { metric: `${prefix}idle guest: 4 KiB O_DIRECT|O_DSYNC writes/s`, value: idle.writesPerSec, unit: 'writes/s' },
    {
      metric: `${prefix}idle guest: write latency p50 / p99`,
      value: idle.p50Us / 1000,
      unit: 'ms',
      baseline: idle.p99Us / 1000,
      baselineLabel: 'p99',
    },
  ];
  for (const p of phases) {
    const limited = p.name === 'limited' || p.name === 'limitedIntermediate';
    const adaptive = p.name.startsWith('adaptive');
    const tRatio = round(p.writesPerSec / idle.writesPerSec, 2);
    const p99Ratio = round(p.p99Us / idle.p99Us, 2);
    const throughputTarget = adaptive ? ADAPTIVE_THROUGHPUT : limited ? TARGET_THROUGHPUT : undefined;
    const p99Target = adaptive ? ADAPTIVE_P99 : limited ? TARGET_P99 : undefined;
    figures.push(
      {
        metric: `${prefix}${p.label}: guest writes/s`,
        value: p.writesPerSec,
        unit: 'writes/s',
        baseline: idle.writesPerSec,
        baselineLabel: 'idle',
        ratio: tRatio,
        ...(throughputTarget === undefined
          ? {}
          : { target: `>= ${throughputTarget}`, met: tRatio >= throughputTarget }),
      },
      {
        metric: `${prefix}${p.label}: write latency p50`,
        value: p.p50Us / 1000,
        unit: 'ms',
        baseline: idle.p50Us / 1000,
        baselineLabel: 'idle',
        ratio: round(p.p50Us / idle.p50Us, 2),
      },
      {
        metric: `${prefix}${p.label}: write latency p99`,
        value: p.p99Us / 1000,
        unit: 'ms',
        baseline: idle.p99Us / 1000,
        baselineLabel: 'idle',
        ratio: p99Ratio,
        ...(p99Target === undefined ? {} : { target: `<= ${p99Target}`, met: p99Ratio <= p99Target }),
      },
    );
  }
  return figures;
}

/**
 * The adaptive commit's time against the unlimited one's of the same kind, same guest. Intermediate
 * commits copy the same data (each layer's); the active ones do not (the adaptive one commits the
 * layer the unlimited one merged into), so theirs is compared per byte of the job's length.
 */
function timeFigures(who: string, times: CommitTime[], idleGuest: boolean): Figure[] {
  const figures: Figure[] = [];
  for (const kind of ['intermediate', 'active'] as const) {
    const unlimited = times.find((t) => t.kind === kind && t.speed === 'unlimited');
    const adaptive = times.find((t) => t.kind === kind && t.speed === 'adaptive');
    if (!unlimited || !adaptive) continue;
    const perByte = kind === 'active' && unlimited.lenBytes > 0 && adaptive.lenBytes > 0;
    const ratio = perByte
      ? round(adaptive.seconds / adaptive.lenBytes / (unlimited.seconds / unlimited.lenBytes), 2)
      : round(adaptive.seconds / unlimited.seconds, 2);
    const goal = idleGuest ? ADAPTIVE_TIME_IDLE : ADAPTIVE_TIME_BUSY;
    figures.push({
      metric: `${who}: adaptive ${kind} commit time vs unlimited${perByte ? ' (per byte of the job)' : ''}`,
      value: adaptive.seconds,
      unit: 's',
      baseline: unlimited.seconds,
      baselineLabel: 'unlimited',
      ratio,
      target: `<= ${goal}`,
      met: ratio <= goal,
    });
  }
  return figures;
}

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

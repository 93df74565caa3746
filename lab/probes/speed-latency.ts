/**
 * How a block commit's speed limit shows in the guest's I/O latency as QEMU itself sees it: the
 * measurement behind an adaptive speed controller (AIMD on block-job-set-speed). One lab VM (one
 * disk of 4 volumes, cache=none, each layer 256 MiB of its own data plus the 256 MiB overwrite
 * region, so a commit's top holds 512 MiB) whose guest writes 4 KiB O_DIRECT|O_DSYNC records at
 * `--rate` (0 = as fast as it goes). Every 200 ms the probe reads `query-blockstats` (the device's
 * BlockBackend: wr/rd/flush operations and total times) and `query-jobs` (current-progress).
 *
 * Windows: after a host `sync` (the images were just written through the page cache), idle (no
 * job), then an active commit (top d0v3, base d0v2) at each speed of SPEEDS (0 = no limit), idle,
 * the same for an intermediate commit (top d0v1, base d0v0), idle. Each commit is measured ~3 s or
 * until it is ready/pending (auto-finalize off), then cancelled (the chain stays as it was, which
 * is checked) and dismissed. The baseline is the idle windows pooled. The device also gets a
 * write-latency histogram (block-latency-histogram-set) for host-side p50/p99. An unmeasured
 * unlimited run of each kind goes first, so every measured run copies into clusters the base
 * already has. Per window: the blockstats' per-interval figures, the guest's
 * ACKs in the window (writes/s on the guest's clock, p50/p99 of the in-guest pwrite latency) and
 * the job's copy rate. Prints a table and writes test-artifacts/speed-latency.json (one key per rate).
 *
 *   npx tsx lab/probes/speed-latency.ts [--rate 0]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { z } from 'zod';

import { auxQmpSocketPath } from '../../src/domain/layout';
import { QmpClient } from '../../src/drivers/qmp/client';
import { parseAckLine, waitForGuestAcks } from '../guest';
import { createLabVm, destroyLabVm, formatNodeName, labDiskId, labVolumeId } from '../vm';

const MiB = 1024 * 1024;
const SPEEDS_MIB = [16, 32, 64, 128, 256, 0];
const INTERVAL_MS = 200;
const IDLE_MS = 5000;
const JOB_MS = 3000;
const LAYER_MIB = 256;
const VOLUMES = 4;

const argsSchema = z.object({ rate: z.coerce.number().int().min(0).max(100_000) });

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Counters {
  wr_operations: number;
  wr_total_time_ns: number;
  wr_bytes: number;
  rd_operations: number;
  rd_total_time_ns: number;
  rd_bytes: number;
  flush_operations: number;
  flush_total_time_ns: number;
}
const COUNTER_KEYS: (keyof Counters)[] = [
  'wr_operations',
  'wr_total_time_ns',
  'wr_bytes',
  'rd_operations',
  'rd_total_time_ns',
  'rd_bytes',
  'flush_operations',
  'flush_total_time_ns',
];

/** Bucket bounds (ns) of the write-latency histogram set on the device (block-latency-histogram-set). */
const HIST_NS = [50, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10_000, 20_000, 50_000, 100_000].map(
  (us) => us * 1000,
);

interface Sample {
  t: number; // ms, performance.now()
  c: Counters;
  /** The device's write-latency histogram bins (HIST_NS), if QEMU reports them. */
  hist?: number[];
  /** wchar of QEMU's /proc/<pid>/io: every byte it wrote, the job's copies and the guest's writes. */
  wchar: number;
  progress?: number;
  status?: string;
  ackBytes: number;
}

interface Interval {
  dtMs: number;
  wrOpsPerSec: number;
  wrLatUs: number | null;
  flushOpsPerSec: number;
  flushLatUs: number | null;
  rdOpsPerSec: number;
  rdLatUs: number | null;
  copyMiBps: number | null;
}

interface WindowResult {
  name: string;
  kind: 'idle' | 'active' | 'intermediate';
  speedMiB: number | null;
  durationMs: number;
  endStatus?: string;
  host: {
    wrOpsPerSec: number;
    wrLatUs: number | null;
    flushOpsPerSec: number;
    flushLatUs: number | null;
    rdOpsPerSec: number;
    rdLatUs: number | null;
    /** Per-interval mean write latency: median and max over the window's intervals. */
    wrLatUsIntervalMedian: number | null;
    wrLatUsIntervalMax: number | null;
    wrBytesPerSec: number;
  };
  guest: { writes: number; writesPerSec: number; p50Us: number; p99Us: number; maxUs: number } | null;
  /** Δcurrent-progress over the window (a commit's progress also counts the unallocated ranges it skips). */
  copyMiBps: number | null;
  /** Median of the per-interval Δcurrent-progress rates after the first interval (the steady copy rate). */
  copyMiBpsIntervalMedian: number | null;
  /** What QEMU wrote (/proc/<pid>/io wchar) beyond the guest's writes (blockstats wr_bytes), MiB/s. */
  hostCopyMiBps: number;
  /** Host-side write latency from the histogram: the bucket upper bounds holding p50 and p99 (µs). */
  histP50Us: number | null;
  histP99Us: number | null;
  copiedMiB: number | null;
  totalMiB: number | null;
  intervals: Interval[];
}

function num(x: unknown): number {
  return typeof x === 'number' ? x : 0;
}

function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

function median(xs: number[]): number | null {
  return xs.length ? percentile(xs, 50) : null;
}

const r1 = (x: number | null): number | null => (x === null || !Number.isFinite(x) ? null : Math.round(x * 10) / 10);

function wchar(pid: number): number {
  try {
    return Number(/wchar:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** The bucket upper bound (µs) holding quantile q of the histogram's Δbins; the last bucket is open. */
function histQuantile(bins: number[] | undefined, q: number): number | null {
  if (!bins) return null;
  const total = bins.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  let acc = 0;
  for (let i = 0; i < bins.length; i++) {
    acc += bins[i];
    if (acc >= q * total) return i < HIST_NS.length ? HIST_NS[i] / 1000 : Infinity;
  }
  return null;
}

function lat(dTimeNs: number, dOps: number): number | null {
  return dOps > 0 ? dTimeNs / dOps / 1000 : null;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rate: { type: 'string', default: '0' } } });
  const args = argsSchema.parse(values);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lm-speed-'));
  const runDir = path.join(dir, 'run');
  const vmId = 'speedlat';
  const diskId = labDiskId(0);
  const vol = (i: number): string => labVolumeId(0, i);
  const raw: Record<string, unknown> = {};
  const windows: WindowResult[] = [];
  const notes: string[] = [];
  const tStart = Date.now();
  try {
    console.log(`creating the lab VM (4 × ${2 * LAYER_MIB} MiB layers, cache=none, guest rate ${args.rate}) …`);
    const vm = await createLabVm({
      storageRoot: path.join(dir, 'storage'),
      runDir,
      vmId,
      disks: 1,
      volumes: VOLUMES,
      layerDataMiB: LAYER_MIB,
      sizeMiB: (VOLUMES + 1) * LAYER_MIB + 64,
      cache: 'none',
      guest: { rate: args.rate, regionMiB: 64 },
    });
    console.log(`VM up after ${((Date.now() - tStart) / 1000).toFixed(1)} s (pid ${vm.pid})`);
    try {
      const ackLog = vm.guest!.ackLog;
      const ackSize = (): number => {
        try {
          return statSync(ackLog).size;
        } catch {
          return 0;
        }
      };
      await waitForGuestAcks(ackLog, 500, { timeoutMs: 120_000 });
      await sleep(1000);
      const qmp = await QmpClient.connect(auxQmpSocketPath(runDir, vmId));
      try {
        const qdevPrefix = `/machine/peripheral/${diskId}/`;
        const blockstats = async (): Promise<Record<string, unknown>> => {
          const all = (await qmp.execute('query-blockstats')) as Array<Record<string, unknown>>;
          const e = all.find((x) => typeof x.qdev === 'string' && x.qdev.startsWith(qdevPrefix));
          if (!e) throw new Error(`no blockstats entry with qdev ${qdevPrefix}…: ${JSON.stringify(all).slice(0, 500)}`);
          return e;
        };
        const first = await blockstats();
        raw.blockstatsEntry = first;
        raw.blockstatsCount = ((await qmp.execute('query-blockstats')) as unknown[]).length;
        console.log(`raw blockstats entry: ${JSON.stringify(first)}`);
        const block = (await qmp.execute('query-block')) as Array<Record<string, unknown>>;
        const dev = block.find((b) => typeof b.qdev === 'string' && (b.qdev as string).startsWith(qdevPrefix));
        const rootNode = (dev?.inserted as { 'node-name'?: string } | undefined)?.['node-name'];
        if (!rootNode) throw new Error(`no root node in query-block: ${JSON.stringify(block).slice(0, 500)}`);
        raw.rootNode = rootNode;
        const chainOf = async (): Promise<string[]> => {
          const b = ((await qmp.execute('query-block')) as Array<Record<string, unknown>>).find(
            (x) => x.qdev === dev!.qdev,
          );
          const names: string[] = [];
          let img = (b?.inserted as { image?: Record<string, unknown> } | undefined)?.image;
          while (img) {
            // With -blockdev options the filename is a json: pseudo-filename.
            names.push(/([^/"]+\.qcow2)/.exec(String(img.filename))?.[1] ?? String(img.filename));
            img = img['backing-image'] as Record<string, unknown> | undefined;
          }
          return names;
        };
        // Host-side latency distribution: QEMU keeps a histogram per device once asked to.
        try {
          await qmp.execute('block-latency-histogram-set', {
            // The virtio-blk-pci proxy (`disk0`) has no BlockBackend; its virtio-backend child has.
            id: String(first.qdev),
            'boundaries-write': HIST_NS,
          });
          raw.histogram = 'set';
        } catch (err) {
          raw.histogram = `block-latency-histogram-set failed: ${String(err)}`;
        }
        raw.blockstatsWithHistogram = (await blockstats()).stats;
        const chain0 = await chainOf();
        console.log(`root node ${rootNode}, chain ${chain0.join(' -> ')}`);

        const sample = async (jobId?: string): Promise<Sample> => {
          const e = await blockstats();
          const t = performance.now();
          const st = e.stats as Record<string, unknown>;
          const c = Object.fromEntries(COUNTER_KEYS.map((k) => [k, num(st[k])])) as unknown as Counters;
          const h = st.wr_latency_histogram as { bins?: number[] } | undefined;
          const s: Sample = { t, c, ackBytes: ackSize(), wchar: wchar(vm.pid), ...(h?.bins ? { hist: h.bins } : {}) };
          if (jobId) {
            const jobs = (await qmp.execute('query-jobs')) as Array<Record<string, unknown>>;
            const j = jobs.find((x) => x.id === jobId);
            if (j) {
              s.progress = num(j['current-progress']);
              s.status = String(j.status);
            }
          }
          return s;
        };

        const measure = async (
          name: string,
          kind: WindowResult['kind'],
          speedMiB: number | null,
          maxMs: number,
          jobId?: string,
        ): Promise<WindowResult> => {
          const samples: Sample[] = [await sample(jobId)];
          const t0 = samples[0].t;
          let total: number | null = null;
          for (;;) {
            const due = t0 + samples.length * INTERVAL_MS;
            await sleep(Math.max(0, due - performance.now()));
            const s = await sample(jobId);
            samples.push(s);
            if (jobId && total === null) {
              const jobs = (await qmp.execute('query-jobs')) as Array<Record<string, unknown>>;
              const j = jobs.find((x) => x.id === jobId);
              if (j) total = num(j['total-progress']);
            }
            if (s.t - t0 >= maxMs) break;
            if (s.status && s.status !== 'running' && s.status !== 'created') break;
          }
          const intervals: Interval[] = [];
          for (let i = 1; i < samples.length; i++) {
            const a = samples[i - 1];
            const b = samples[i];
            const dt = (b.t - a.t) / 1000;
            const d = (k: keyof Counters): number => b.c[k] - a.c[k];
            intervals.push({
              dtMs: Math.round(b.t - a.t),
              wrOpsPerSec: Math.round(d('wr_operations') / dt),
              wrLatUs: r1(lat(d('wr_total_time_ns'), d('wr_operations'))),
              flushOpsPerSec: Math.round(d('flush_operations') / dt),
              flushLatUs: r1(lat(d('flush_total_time_ns'), d('flush_operations'))),
              rdOpsPerSec: Math.round(d('rd_operations') / dt),
              rdLatUs: r1(lat(d('rd_total_time_ns'), d('rd_operations'))),
              copyMiBps:
                a.progress !== undefined && b.progress !== undefined ? r1((b.progress - a.progress) / MiB / dt) : null,
            });
          }
          const a = samples[0];
          const b = samples[samples.length - 1];
          const dt = (b.t - a.t) / 1000;
          const d = (k: keyof Counters): number => b.c[k] - a.c[k];
          const latencies = intervals.map((i) => i.wrLatUs).filter((x): x is number => x !== null);
          const guest = ackStats(ackLog, a.ackBytes, b.ackBytes);
          const dHist = a.hist && b.hist ? b.hist.map((x, i) => x - (a.hist?.[i] ?? 0)) : undefined;
          const steady = intervals
            .slice(1)
            .map((i) => i.copyMiBps)
            .filter((x): x is number => x !== null);
          const copied = a.progress !== undefined && b.progress !== undefined ? b.progress - a.progress : null;
          return {
            name,
            kind,
            speedMiB,
            durationMs: Math.round(b.t - a.t),
            ...(b.status ? { endStatus: b.status } : {}),
            host: {
              wrOpsPerSec: Math.round(d('wr_operations') / dt),
              wrLatUs: r1(lat(d('wr_total_time_ns'), d('wr_operations'))),
              flushOpsPerSec: Math.round(d('flush_operations') / dt),
              flushLatUs: r1(lat(d('flush_total_time_ns'), d('flush_operations'))),
              rdOpsPerSec: Math.round(d('rd_operations') / dt),
              rdLatUs: r1(lat(d('rd_total_time_ns'), d('rd_operations'))),
              wrLatUsIntervalMedian: median(latencies),
              wrLatUsIntervalMax: latencies.length ? Math.max(...latencies) : null,
              wrBytesPerSec: Math.round(d('wr_bytes') / dt),
            },
            guest,
            copyMiBps: copied === null ? null : r1(copied / MiB / dt),
            copyMiBpsIntervalMedian: median(steady),
            hostCopyMiBps: r1((b.wchar - a.wchar - d('wr_bytes')) / MiB / dt) ?? 0,
            histP50Us: histQuantile(dHist, 0.5),
            histP99Us: histQuantile(dHist, 0.99),
            copiedMiB: copied === null ? null : r1(copied / MiB),
            totalMiB: total === null ? null : r1(total / MiB),
            intervals,
          };
        };

        /** Cancels the job, finalizes it if it waits in `pending`, and dismisses it once concluded. */
        const endJob = async (jobId: string): Promise<string[]> => {
          const seen: string[] = [];
          await qmp.execute('block-job-cancel', { device: jobId });
          const deadline = Date.now() + 60_000;
          for (;;) {
            const j = ((await qmp.execute('query-jobs')) as Array<Record<string, unknown>>).find((x) => x.id === jobId);
            if (!j) break;
            const st = String(j.status);
            if (seen[seen.length - 1] !== st) seen.push(st);
            if (st === 'pending') await qmp.execute('job-finalize', { id: jobId });
            if (st === 'concluded') {
              if (j.error) seen.push(`error: ${String(j.error)}`);
              await qmp.execute('job-dismiss', { id: jobId });
              break;
            }
            if (Date.now() > deadline) throw new Error(`job ${jobId} did not conclude: ${JSON.stringify(j)}`);
            await sleep(50);
          }
          return seen;
        };

        let jobN = 0;
        const runJob = async (
          kind: 'active' | 'intermediate',
          speedMiB: number,
          measured: boolean,
        ): Promise<WindowResult | undefined> => {
          const top = kind === 'active' ? VOLUMES - 1 : 1;
          const jobId = `sl-${kind}-${speedMiB}-${jobN++}`;
          const cmd: Record<string, unknown> = {
            'job-id': jobId,
            device: rootNode,
            'top-node': formatNodeName(vol(top)),
            'base-node': formatNodeName(vol(top - 1)),
            'auto-dismiss': false,
            // An intermediate commit that finishes within the window must not change the chain.
            'auto-finalize': false,
          };
          if (speedMiB > 0) cmd.speed = speedMiB * MiB;
          await qmp.execute('block-commit', cmd);
          if (raw.queryJobs === undefined) {
            raw.queryJobs = await qmp.execute('query-jobs');
            raw.queryBlockJobs = await qmp.execute('query-block-jobs');
            console.log(`raw query-jobs: ${JSON.stringify(raw.queryJobs)}`);
            console.log(`raw query-block-jobs: ${JSON.stringify(raw.queryBlockJobs)}`);
          }
          let w: WindowResult | undefined;
          if (measured) w = await measure(`${kind}@${speedMiB || 'unlimited'}`, kind, speedMiB, JOB_MS, jobId);
          else await sleep(JOB_MS);
          const states = await endJob(jobId);
          const chain = await chainOf();
          if (chain.join() !== chain0.join())
            throw new Error(`the chain changed after ${jobId}: ${chain.join(' -> ')} (was ${chain0.join(' -> ')})`);
          if (w) (w as WindowResult & { cancelStates?: string[] }).cancelStates = states;
          await sleep(1000); // the host's disk quiet again
          return w;
        };

        // The images were just written through the host's page cache: let the writeback end first.
        execFileSync('sync');
        await sleep(5000);
        for (const kind of ['active', 'intermediate'] as const) {
          console.log('idle …');
          windows.push(await measure(`idle-pre-${kind.slice(0, 5)}`, 'idle', null, IDLE_MS));
          console.log(`${kind} commit: warm-up (unlimited, unmeasured) …`);
          await runJob(kind, 0, false);
          for (const speed of SPEEDS_MIB) {
            if ((Date.now() - tStart) / 1000 > 480) {
              notes.push(`stopped before ${kind}@${speed}: time budget`);
              break;
            }
            const w = await runJob(kind, speed, true);
            if (w) {
              windows.push(w);
              console.log(
                `  ${w.name}: ${w.durationMs} ms, end ${w.endStatus}, copy ${w.copyMiBps} MiB/s, host wr lat ${w.host.wrLatUs} us`,
              );
            }
          }
        }
        console.log('idle …');
        windows.push(await measure('idle-after', 'idle', null, IDLE_MS));
      } finally {
        await qmp.close();
      }
    } finally {
      await destroyLabVm(runDir, vmId).catch(() => undefined);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const idles = windows.filter((w) => w.kind === 'idle');
  const idle = pooledIdle(idles);
  const ratio = (x: number | null | undefined, base: number | null | undefined): string =>
    x === null || x === undefined || !base ? '   -' : (x / base).toFixed(2);
  const pad = (s: unknown, n: number): string => String(s ?? '-').padStart(n);
  console.log(`\nguest rate ${args.rate || 'unlimited'}; baseline = the idle windows pooled (ops-weighted):`);
  console.log(
    `  host wr ${idle.wrOpsPerSec}/s ${idle.wrLatUs} us, flush ${idle.flushLatUs} us; guest ${idle.guestWps}/s p99 ${idle.guestP99} us`,
  );
  console.log(
    'window              ms  end     prog/s steady hostCp  wrLat ratio ivMax hP50 hP99 flushLat ratio rdLat hostWr/s guestW/s ratio gP50  gP99 ratio',
  );
  for (const w of windows) {
    console.log(
      [
        w.name.padEnd(18),
        pad(w.durationMs, 5),
        (w.endStatus ?? '').padEnd(7),
        pad(w.copyMiBps, 6),
        pad(w.copyMiBpsIntervalMedian, 6),
        pad(w.hostCopyMiBps, 6),
        pad(w.host.wrLatUs, 6),
        pad(ratio(w.host.wrLatUs, idle.wrLatUs), 5),
        pad(r1(w.host.wrLatUsIntervalMax), 5),
        pad(w.histP50Us, 4),
        pad(w.histP99Us, 4),
        pad(w.host.flushLatUs, 8),
        pad(ratio(w.host.flushLatUs, idle.flushLatUs), 5),
        pad(w.host.rdLatUs, 5),
        pad(w.host.wrOpsPerSec, 8),
        pad(w.guest?.writesPerSec, 8),
        pad(ratio(w.guest?.writesPerSec, idle.guestWps), 5),
        pad(w.guest?.p50Us, 4),
        pad(w.guest?.p99Us, 5),
        pad(ratio(w.guest?.p99Us, idle.guestP99), 5),
      ].join(' '),
    );
  }
  const out = path.resolve(__dirname, '../../test-artifacts/speed-latency.json');
  mkdirSync(path.dirname(out), { recursive: true });
  // Both rates keep their results: one object per rate in the file.
  let prev: Record<string, unknown>;
  try {
    prev = JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>;
  } catch {
    prev = {};
  }
  prev[`rate${args.rate}`] = {
    guestRate: args.rate,
    layerDataMiB: LAYER_MIB,
    topMiB: 2 * LAYER_MIB,
    intervalMs: INTERVAL_MS,
    baseline: idle,
    qemu: raw,
    notes,
    windows,
    at: new Date().toISOString(),
    runSec: Math.round((Date.now() - tStart) / 1000),
  };
  writeFileSync(out, `${JSON.stringify(prev, null, 2)}\n`);
  console.log(`written to ${out} (key rate${args.rate}), run took ${Math.round((Date.now() - tStart) / 1000)} s`);
}

/** The idle windows pooled: latencies weighted by operations, the guest's rates averaged. */
function pooledIdle(idles: WindowResult[]): {
  wrOpsPerSec: number;
  wrLatUs: number | null;
  flushLatUs: number | null;
  guestWps: number | null;
  guestP99: number | null;
} {
  let ops = 0;
  let wrNs = 0;
  let fOps = 0;
  let fNs = 0;
  let sec = 0;
  for (const w of idles) {
    const s = w.durationMs / 1000;
    sec += s;
    ops += w.host.wrOpsPerSec * s;
    wrNs += (w.host.wrLatUs ?? 0) * 1000 * w.host.wrOpsPerSec * s;
    fOps += w.host.flushOpsPerSec * s;
    fNs += (w.host.flushLatUs ?? 0) * 1000 * w.host.flushOpsPerSec * s;
  }
  const g = idles.map((w) => w.guest).filter((x) => x !== null);
  return {
    wrOpsPerSec: Math.round(ops / sec),
    wrLatUs: r1(lat(wrNs, ops)),
    flushLatUs: r1(lat(fNs, fOps)),
    guestWps: g.length ? r1(g.reduce((a, x) => a + x.writesPerSec, 0) / g.length) : null,
    guestP99: g.length ? r1(g.reduce((a, x) => a + x.p99Us, 0) / g.length) : null,
  };
}

/** The guest's ACKs between two sizes of the ACK log: writes/s on the guest's clock, pwrite latency. */
function ackStats(ackLog: string, startByte: number, endByte: number): WindowResult['guest'] {
  if (endByte <= startByte) return null;
  const buf = readFileSync(ackLog).subarray(startByte, endByte).toString('latin1');
  const acks: Array<[number, number]> = [];
  const lines = buf.split('\n');
  lines.shift(); // maybe cut at the start
  for (const l of lines) {
    const p = parseAckLine(l.replace(/\r+$/, ''));
    if (p.ok && p.value.kind === 'ACK' && p.value.tUs !== undefined && p.value.latUs !== undefined)
      acks.push([p.value.tUs, p.value.latUs]);
  }
  if (acks.length < 2) return null;
  const span = (acks[acks.length - 1][0] - acks[0][0]) / 1e6;
  const latencies = acks.map(([, l]) => l);
  return {
    writes: acks.length,
    writesPerSec: span > 0 ? Math.round(((acks.length - 1) / span) * 10) / 10 : 0,
    p50Us: percentile(latencies, 50),
    p99Us: percentile(latencies, 99),
    maxUs: Math.max(...latencies),
  };
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

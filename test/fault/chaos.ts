/**
 * A seeded chaos run: M merges on real VMs while the engine worker, the host agent and the
 * Temporal server are killed (SIGKILL) and restarted at random moments. Every VM runs the lab guest,
 * writing to every disk from before its merge starts until after it ended. At the end every disk
 * must be merged (top out of the chain and deleted) or untouched (top in the chain and kept), with
 * its data intact either way, and once the guest stopped the check must find every write it
 * acknowledged. The seed is printed; the same seed replays the same plan.
 *
 *   npx tsx test/fault/chaos.ts --merges 20 --seed 7 [--parallel 3]
 *
 * `--mode qemu` kills each VM's QEMU instead, at a random moment of its merge (stop-chaos.ts).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { z } from 'zod';

import { checkGuestWrites } from '../../lab/guest';
import { destroyLabVm, type LabVm, stopLabVm, verifyLabVm } from '../../lab/vm';
import { volumePath } from '../../src/domain/layout';
import { FaultStack } from '../harness/process-stack';
import { mergeRequest, MiB, startMerge } from '../harness/scenario';
import { chaosVm } from './chaos-vm';
import { runStopChaos } from './stop-chaos';

export interface ChaosOptions {
  merges: number;
  seed: number;
  parallel: number;
  log?: (line: string) => void;
}

export interface DiskVerdict {
  snapshotId: string;
  diskId: string;
  top: string;
  state: 'merged' | 'untouched' | 'BROKEN';
  detail?: string;
  /** The guest's writes to the disk: acknowledged (offsets), found by the check, lost. */
  guest: { acknowledged: number; offsetsAcknowledged: number; found: number; lost: number };
}

export interface ChaosReport {
  seed: number;
  merges: number;
  kills: Array<{ atMs: number; victim: string; downMs: number }>;
  workflows: Record<string, number>;
  disks: DiskVerdict[];
  ok: boolean;
  durationMs: number;
}

/** mulberry32: small, seeded, good enough to replay a plan. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  const log = opts.log ?? ((line: string) => console.log(line));
  const random = prng(opts.seed);
  const started = Date.now();
  const stack = await new FaultStack().start();
  const kills: ChaosReport['kills'] = [];
  const workflows: Record<string, number> = {};
  const disks: DiskVerdict[] = [];
  let done = false;

  // The plan of each merge is drawn up front, so the seed fixes it whatever the timing.
  const plans = Array.from({ length: opts.merges }, (_, i) => ({
    index: i,
    disks: 1 + Math.floor(random() * 2),
    kinds: [random() < 0.5 ? 'intermediate' : 'active', random() < 0.5 ? 'intermediate' : 'active'] as Array<
      'intermediate' | 'active'
    >,
    // At least 2 MiB/s: the guest (GUEST_RATE, chaos-vm.ts) dirties at most 0.6 MiB/s of clusters a disk, so active commits converge.
    bandwidthMiB: 2 + Math.floor(random() * 3),
  }));
  const chaosRandom = prng(opts.seed ^ 0x5eed);

  const chaos = (async () => {
    while (!done) {
      await sleep(1000 + chaosRandom() * 3000);
      if (done) break;
      const victim = (['engine', 'host', 'server'] as const)[Math.floor(chaosRandom() * 3)];
      const downMs = Math.round(200 + chaosRandom() * 1500);
      const atMs = Date.now() - started;
      log(`chaos: kill ${victim} at ${atMs} ms, down ${downMs} ms`);
      if (victim === 'engine') await stack.engine!.kill();
      if (victim === 'host') await stack.host!.kill();
      if (victim === 'server') await stack.server.kill();
      await sleep(downMs);
      if (victim === 'engine') await stack.startEngine();
      if (victim === 'host') await stack.startHost();
      if (victim === 'server') await stack.startServer();
      kills.push({ atMs, victim, downMs });
    }
  })();

  async function one(plan: (typeof plans)[number]): Promise<void> {
    // The guest writes before the merge starts, and on until after it ended.
    const vm: LabVm = await chaosVm(stack, 'chaos', plan.index, plan.disks);
    const request = mergeRequest(vm, `chaos-${opts.seed}-${plan.index}`, plan.kinds.slice(0, plan.disks), {
      bandwidthBytesPerSec: plan.bandwidthMiB * MiB,
    });
    const handle = await retrying(() => startMerge(stack, request));
    // result() also ends on a server that went away under it: only a closed workflow counts.
    const status = await retrying(async () => {
      await handle.result().catch(() => undefined);
      const name = (await handle.describe()).status.name;
      if (name === 'RUNNING') throw new Error('still running');
      return name;
    }, 600_000);
    workflows[status] = (workflows[status] ?? 0) + 1;
    const report = await verifyLabVm(stack.runDir, vm.vmId);
    const stopped = await stopLabVm(stack.runDir, vm.vmId);
    const writes = await checkGuestWrites(stack.runDir, vm.vmId);
    for (const d of request.disks) {
      const chain = report.disks.find((x) => x.diskId === d.diskId)?.chain ?? [];
      const inChain = chain.includes(d.topVolumeId);
      const onDisk = existsSync(volumePath(stack.storageRoot, d.diskId, d.topVolumeId));
      const dataOk = report.disks.find((x) => x.diskId === d.diskId)?.ok ?? false;
      const g = writes.disks.find((x) => x.diskId === d.diskId);
      const problems = writes.problems.filter((p) => p.diskId === undefined || p.diskId === d.diskId);
      const writesOk = g !== undefined && g.lost === 0 && g.acknowledged > 0 && problems.length === 0;
      const layout = !inChain && !onDisk ? 'merged' : inChain && onDisk ? 'untouched' : 'BROKEN';
      const state = !dataOk || !writesOk ? 'BROKEN' : layout;
      disks.push({
        snapshotId: String(request.snapshotId),
        diskId: d.diskId,
        top: d.topVolumeId,
        state,
        guest: {
          acknowledged: g?.acknowledged ?? 0,
          offsetsAcknowledged: g?.offsetsAcknowledged ?? 0,
          found: g?.found ?? 0,
          lost: g?.lost ?? 0,
        },
        ...(state === 'BROKEN'
          ? {
              detail: `chain ${chain.join('->')}, top file ${onDisk ? 'present' : 'gone'}, data ${dataOk ? 'ok' : 'BAD'}, guest ${stopped}: ${g?.lost ?? '?'} lost of ${g?.offsetsAcknowledged ?? '?'}; ${problems
                .slice(0, 3)
                .map((p) => p.detail)
                .join(' | ')}`,
            }
          : {}),
      });
    }
    log(`merge ${plan.index}: ${status}, ${request.disks.map((d) => d.diskId).join(', ')}`);
    await destroyLabVm(stack.runDir, vm.vmId);
  }

  try {
    const queue = [...plans];
    await Promise.all(
      Array.from({ length: opts.parallel }, async () => {
        for (let plan = queue.shift(); plan; plan = queue.shift()) await one(plan);
      }),
    );
  } finally {
    done = true;
    await chaos;
    await stack.close();
  }
  return {
    seed: opts.seed,
    merges: opts.merges,
    kills,
    workflows,
    disks,
    ok: disks.every((d) => d.state !== 'BROKEN') && disks.length > 0,
    durationMs: Date.now() - started,
  };
}

/** Client calls may meet a server that is down for a moment: try again until it is back. */
async function retrying<T>(fn: () => Promise<T>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(500);
    }
  }
}

if (require.main === module) {
  const { values } = parseArgs({
    options: {
      merges: { type: 'string', default: '10' },
      seed: { type: 'string' },
      parallel: { type: 'string', default: '3' },
      mode: { type: 'string', default: 'processes' },
    },
  });
  const opts = z
    .object({
      merges: z.coerce.number().int().min(1).max(1000),
      seed: z.coerce.number().int().min(0),
      parallel: z.coerce.number().int().min(1).max(16),
      mode: z.enum(['processes', 'qemu']),
    })
    .parse({
      merges: values.merges,
      seed: values.seed ?? Math.floor(Math.random() * 1e9),
      parallel: values.parallel,
      mode: values.mode,
    });
  console.log(`chaos (${opts.mode}): seed ${opts.seed}, ${opts.merges} merges, ${opts.parallel} at a time`);
  if (opts.mode === 'qemu') mainStopChaos(opts);
  else mainProcessChaos(opts);
}

function mainStopChaos(opts: { merges: number; seed: number; parallel: number }): void {
  runStopChaos({ ...opts, random: prng(opts.seed), log: (line) => console.log(line) }).then(
    (report) => {
      const file = writeReport(`chaos-qemu-${opts.seed}.json`, report);
      const states = report.disks.reduce<Record<string, number>>(
        (acc, d) => ({ ...acc, [d.state]: (acc[d.state] ?? 0) + 1 }),
        {},
      );
      const stale = report.disks.filter((d) => d.topStale).length;
      const leaked = report.disks.reduce((n, d) => n + (d.leakedClusters ?? 0), 0);
      const acked = report.disks.reduce((n, d) => n + d.guest.acknowledged, 0);
      const offsets = report.disks.reduce((n, d) => n + d.guest.offsetsAcknowledged, 0);
      const found = report.disks.reduce((n, d) => n + d.guest.found, 0);
      const lost = report.disks.reduce((n, d) => n + d.guest.lost, 0);
      console.log(
        `chaos (qemu): seed ${report.seed}: ${report.merges} merges, QEMU killed in each, in ${Math.round(report.durationMs / 1000)} s; disks ${JSON.stringify(states)}, ${stale} with a stale top, ${leaked} leaked clusters (a killed QEMU's; no corruption); guest writes ${acked} acknowledged (${offsets} offsets), ${found} found, ${lost} lost; invariant ${report.ok ? 'HELD' : 'BROKEN'}; report ${file}`,
      );
      for (const d of report.disks.filter((x) => x.state === 'BROKEN'))
        console.log(`  BROKEN ${d.snapshotId}/${d.diskId}: ${d.detail}`);
      process.exit(report.ok ? 0 : 1);
    },
    (err: unknown) => {
      console.error('chaos run failed:', err);
      process.exit(1);
    },
  );
}

function writeReport(name: string, report: unknown): string {
  const dir = path.resolve(__dirname, '../../test-artifacts');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  writeFileSync(file, JSON.stringify(report, null, 2));
  return file;
}

function mainProcessChaos(opts: { merges: number; seed: number; parallel: number }): void {
  runChaos(opts).then(
    (report) => {
      const file = writeReport(`chaos-${opts.seed}.json`, report);
      const counts = report.disks.reduce<Record<string, number>>(
        (acc, d) => ({ ...acc, [d.state]: (acc[d.state] ?? 0) + 1 }),
        {},
      );
      const acked = report.disks.reduce((n, d) => n + d.guest.acknowledged, 0);
      const offsets = report.disks.reduce((n, d) => n + d.guest.offsetsAcknowledged, 0);
      const found = report.disks.reduce((n, d) => n + d.guest.found, 0);
      const lost = report.disks.reduce((n, d) => n + d.guest.lost, 0);
      console.log(
        `chaos: guest writes on ${report.disks.length} disks: ${acked} acknowledged (${offsets} offsets), ${found} found, ${lost} lost`,
      );
      console.log(
        `chaos: seed ${report.seed}: ${report.merges} merges in ${Math.round(report.durationMs / 1000)} s, ${report.kills.length} kills (${['engine', 'host', 'server'].map((v) => `${v} ${report.kills.filter((k) => k.victim === v).length}`).join(', ')}); workflows ${JSON.stringify(report.workflows)}; disks ${JSON.stringify(counts)}; invariant ${report.ok ? 'HELD' : 'BROKEN'}; report ${file}`,
      );
      for (const d of report.disks.filter((x) => x.state === 'BROKEN'))
        console.log(`  BROKEN ${d.snapshotId}/${d.diskId}: ${d.detail}`);
      process.exit(report.ok ? 0 : 1);
    },
    (err: unknown) => {
      console.error('chaos run failed:', err);
      process.exit(1);
    },
  );
}

import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';

import { inNetns } from '../../lab/cluster/netns';
import { type Bench, type BenchContext, type Figure, MiB, round, scratchDir } from '../support/common';
import { cpuSecOf, cpuSecOfTree, processTree, pssOf, sum } from '../support/proc';
import { DISKS, ENGINE_OPTIONS, HOST_OPTIONS, LOAD_END, LOAD_START, type PhaseResult, type PhaseSpec } from './phase';
import { startClusterTarget, startDevServerTarget, type ThroughputTarget } from './targets';

/**
 * Throughput at scale: N merges of 2 disks each across H simulated hosts, all started at once,
 * against a baseline workflow of the same shape (one child per disk on its host's queue, its short
 * steps no-op local activities, its wait a no-op activity) on the same server in the same run, and
 * against the shape the product had before (children on the engine, five no-op activities each); on the CLI's dev server, then on the production topology
 * (PostgreSQL, five Temporal services, mTLS). The workers of each phase are a process of their own,
 * in the cluster's network namespace for the cluster.
 */

interface ServerSide {
  /** Largest proportional set size seen during the load, summed over the server's processes. */
  serverPssMaxMiB: number;
  databasePssMaxMiB?: number;
  serverCpuSec: number;
  databaseCpuSec?: number;
}
type Measured = PhaseResult & ServerSide;

const PHASE_MAIN = path.join(__dirname, 'phase-main.ts');
const REPO_ROOT = path.resolve(__dirname, '../..');

export const throughputBench: Bench = {
  name: 'throughput',
  title: 'Throughput at scale (simulated hosts): the dev server and the cluster',
  async run(ctx: BenchContext) {
    const merges = ctx.quick ? 40 : 1000;
    const hosts = ctx.quick ? 10 : 50;
    ctx.log(
      `throughput: ${merges} merges x ${DISKS} disks across ${hosts} hosts, each server baseline first${ctx.quick ? ' (quick: the dev server only)' : ''}`,
    );
    const runs: Record<string, { baseline: Measured; baselineEngine: Measured; product: Measured }> = {};
    const starts = [(dir: string) => startDevServerTarget(dir), (dir: string) => startClusterTarget(dir, ctx.log)];
    // CI's quick run is a smoke test of the method; the cluster's start and phases take over a minute.
    if (ctx.quick) starts.pop();
    for (const start of starts) {
      const scratch = scratchDir('tp');
      const target = await start(scratch.dir);
      try {
        const phase = (kind: PhaseSpec['kind']) =>
          runPhaseProcess(target, { kind, merges, hosts, dir: scratch.dir, ctx });
        const baselineEngine = await phase('baseline');
        const baseline = await phase('baseline-host');
        const product = await phase('product');
        runs[target.name] = { baseline, baselineEngine, product };
      } finally {
        await target.stop();
        scratch.remove();
      }
    }
    const figures = Object.entries(runs).flatMap(([server, r]) =>
      serverFigures(server, r.baseline, r.baselineEngine, r.product, merges, hosts),
    );
    return {
      figures,
      details: { merges, hosts, disksPerMerge: DISKS, engineOptions: ENGINE_OPTIONS, hostOptions: HOST_OPTIONS, runs },
    };
  },
};

function serverFigures(
  server: string,
  baseline: Measured,
  baselineEngine: Measured,
  product: Measured,
  merges: number,
  hosts: number,
): Figure[] {
  const pair = (p: number, b: number, digits = 1) => ({
    value: round(p, digits),
    baseline: round(b, digits),
    baselineLabel: 'same-shape no-op workflow',
  });
  const ratio = round(product.mergesPerSec / baseline.mergesPerSec, 3);
  const figures: Figure[] = [
    {
      metric: `${server}: merges/s (${merges} merges x ${DISKS} disks, ${hosts} hosts)`,
      unit: 'merges/s',
      ...pair(product.mergesPerSec, baseline.mergesPerSec),
      ratio,
      target: 'ratio >= 1.0',
      met: ratio >= 1,
    },
    {
      metric: `${server}: merges/s against the shape before disk-on-host`,
      unit: 'merges/s',
      value: round(product.mergesPerSec, 1),
      baseline: round(baselineEngine.mergesPerSec, 1),
      baselineLabel: 'no-op workflow, children on the engine',
      ratio: round(product.mergesPerSec / baselineEngine.mergesPerSec, 3),
    },
    {
      metric: `${server}: failed merges`,
      unit: 'merges',
      ...pair(product.failed, baseline.failed, 0),
      target: '0',
      met: product.failed === 0,
    },
    {
      metric: `${server}: end-to-end p50`,
      unit: 'ms',
      ...pair(product.e2eP50Ms, baseline.e2eP50Ms, 0),
      ratio: round(product.e2eP50Ms / baseline.e2eP50Ms, 2),
    },
    {
      metric: `${server}: end-to-end p99`,
      unit: 'ms',
      ...pair(product.e2eP99Ms, baseline.e2eP99Ms, 0),
      ratio: round(product.e2eP99Ms / baseline.e2eP99Ms, 2),
    },
    {
      metric: `${server}: server memory (PSS, all its processes)`,
      unit: 'MiB',
      ...pair(product.serverPssMaxMiB, baseline.serverPssMaxMiB, 0),
      ratio: round(product.serverPssMaxMiB / baseline.serverPssMaxMiB, 2),
    },
  ];
  if (product.databasePssMaxMiB !== undefined && baseline.databasePssMaxMiB !== undefined) {
    figures.push({
      metric: `${server}: database memory (PSS, PostgreSQL and its backends)`,
      unit: 'MiB',
      ...pair(product.databasePssMaxMiB, baseline.databasePssMaxMiB, 0),
      ratio: round(product.databasePssMaxMiB / baseline.databasePssMaxMiB, 2),
    });
  }
  const perMerge = (label: string, p: number, b: number) => ({
    metric: `${server}: CPU per merge, ${label}`,
    unit: 'ms',
    ...pair((p / merges) * 1000, (b / merges) * 1000),
    ratio: round(p / b, 2),
  });
  figures.push(perMerge('workers', product.workerCpuSec, baseline.workerCpuSec));
  figures.push(perMerge('server', product.serverCpuSec, baseline.serverCpuSec));
  if (product.databaseCpuSec !== undefined && baseline.databaseCpuSec !== undefined) {
    figures.push(perMerge('database', product.databaseCpuSec, baseline.databaseCpuSec));
  }
  figures.push({
    metric: `${server}: worker RSS (engine + ${hosts} host workers, one process)`,
    unit: 'MiB',
    ...pair(product.workerRssMaxMiB, baseline.workerRssMaxMiB, 0),
    ratio: round(product.workerRssMaxMiB / baseline.workerRssMaxMiB, 2),
  });
  return figures;
}

/** Runs one phase as a child process and samples the server's processes while its merges run. */
async function runPhaseProcess(
  target: ThroughputTarget,
  o: { kind: PhaseSpec['kind']; merges: number; hosts: number; dir: string; ctx: BenchContext },
): Promise<Measured> {
  const spec: PhaseSpec = {
    kind: o.kind,
    merges: o.merges,
    hosts: o.hosts,
    dir: path.join(o.dir, o.kind),
    idPrefix: { baseline: 'b', 'baseline-host': 'bh', product: 'p' }[o.kind],
    ...target.connection,
    resultFile: path.join(o.dir, `${o.kind}.result.json`),
  };
  const specFile = path.join(o.dir, `${o.kind}.spec.json`);
  writeFileSync(specFile, JSON.stringify(spec));
  const node = [process.execPath, '--import', 'tsx', PHASE_MAIN, specFile];
  const [cmd, ...args] = target.netns ? inNetns(target.netns, node) : node;
  const child = spawn(cmd, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const sampler = new ServerSampler(target);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    if (line === LOAD_START) sampler.start();
    else if (line === LOAD_END) sampler.end();
    else o.ctx.log(line);
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  sampler.end();
  if (code !== 0) throw new Error(`throughput phase ${o.kind} on ${target.name} exited ${code}: ${stderr}`);
  const result = JSON.parse(readFileSync(spec.resultFile, 'utf8')) as PhaseResult;
  const measured = { ...result, ...sampler.result() };
  o.ctx.log(
    `  ${target.name} ${o.kind}: ${measured.mergesPerSec.toFixed(1)} merges/s, p50 ${measured.e2eP50Ms} ms, p99 ${measured.e2eP99Ms} ms, failed ${measured.failed}`,
  );
  return measured;
}

/** The server's (and its database's) memory high-water mark and CPU seconds between start() and end(). */
class ServerSampler {
  private timer?: NodeJS.Timeout;
  private serverPssMax = 0;
  private databasePssMax = 0;
  private cpu0 = { server: 0, database: 0 };
  private cpu = { server: 0, database: 0 };

  constructor(private readonly target: ThroughputTarget) {}

  start(): void {
    this.cpu0 = this.cpuNow();
    this.timer = setInterval(() => this.sample(), 1000);
  }

  end(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    const now = this.cpuNow();
    this.cpu = { server: now.server - this.cpu0.server, database: now.database - this.cpu0.database };
  }

  result(): ServerSide {
    const hasDb = this.target.databasePid() !== undefined;
    return {
      serverPssMaxMiB: Math.round(this.serverPssMax / MiB),
      serverCpuSec: round(this.cpu.server, 1),
      ...(hasDb
        ? { databasePssMaxMiB: Math.round(this.databasePssMax / MiB), databaseCpuSec: round(this.cpu.database, 1) }
        : {}),
    };
  }

  private sample(): void {
    this.serverPssMax = Math.max(this.serverPssMax, sum(this.target.serverPids().map(pssOf)));
    const db = this.target.databasePid();
    if (db) this.databasePssMax = Math.max(this.databasePssMax, sum(processTree(db).map(pssOf)));
  }

  private cpuNow(): { server: number; database: number } {
    const db = this.target.databasePid();
    return { server: sum(this.target.serverPids().map(cpuSecOf)), database: db ? cpuSecOfTree(db) : 0 };
  }
}

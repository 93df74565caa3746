import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { bundleWorkflowCode, DefaultLogger, Runtime, type WorkflowBundleWithSourceMap } from '@temporalio/worker';

import { type ConnectedDevServer, startConnectedDevServer } from '../../lab/devserver/connected';
import { WORKFLOW_BUNDLER_OPTIONS } from '../../src/workers/workflow-bundle';
import { processTree, sum } from './proc';

export const MiB = 1024 * 1024;
export const RESULTS_DIR = path.resolve(__dirname, '../results');

/** One figure of a benchmark, with the baseline measured in the same run beside it. */
export interface Figure {
  metric: string;
  value: number;
  unit: string;
  baseline?: number;
  baselineLabel?: string;
  /** value / baseline, or as the benchmark defines it (e.g. baseline rate / our rate). */
  ratio?: number;
  /** The target in words, e.g. "ratio <= 1.10". */
  target?: string;
  /** Whether the target is met; undefined when the figure has no target. */
  met?: boolean;
}

export interface BenchResult {
  name: string;
  title: string;
  quick: boolean;
  startedAt: string;
  durationSec: number;
  machine: MachineInfo;
  command: string;
  figures: Figure[];
  details: unknown;
}

export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  memGiB: number;
  loadAvg1mAtStart: number;
  node: string;
  qemu: string;
  temporalCli: string;
  kernel: string;
}

export interface BenchContext {
  quick: boolean;
  log: (msg: string) => void;
}

export interface Bench {
  name: string;
  title: string;
  run(ctx: BenchContext): Promise<{ figures: Figure[]; details: unknown }>;
}

let runtimeInstalled = false;
export function installRuntime(): void {
  if (runtimeInstalled) return;
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  runtimeInstalled = true;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  const version = (cmd: string, args: string[]): string => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8' }).split('\n')[0].trim();
    } catch {
      return 'unknown';
    }
  };
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    loadAvg1mAtStart: Math.round(os.loadavg()[0] * 100) / 100,
    node: process.version,
    qemu: version('qemu-system-x86_64', ['--version']),
    temporalCli: 'v1.5.1 (pinned, temporal server start-dev, SQLite)',
    kernel: `${os.type()} ${os.release()}`,
  };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank];
}

export function median(values: number[]): number {
  return percentile(values, 50);
}

export function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * An error with its causes, joined by ` <- `, each with its failure type where it has one: a
 * WorkflowFailedError alone says only "Workflow execution failed".
 */
export function withCauses(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err; e instanceof Error && parts.length < 5; e = e.cause) {
    const type = (e as { type?: unknown }).type;
    parts.push(`${e.name}${typeof type === 'string' ? ` (${type})` : ''}: ${e.message}`);
  }
  return parts.length > 0 ? parts.join(' <- ') : String(err);
}

/** A scratch dir under the OS temp dir, short enough for QMP socket paths. */
export function scratchDir(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), `lmb-${prefix}-`));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export type BenchServer = ConnectedDevServer;

/** A headless dev server of its own (SQLite file in a scratch dir) with a client and a worker connection. */
export async function startBenchServer(dir: string): Promise<BenchServer> {
  installRuntime();
  return startConnectedDevServer(dir);
}

const bundles = new Map<string, Promise<WorkflowBundleWithSourceMap>>();
export function bundle(workflowsPath: string): Promise<WorkflowBundleWithSourceMap> {
  let b = bundles.get(workflowsPath);
  if (!b) {
    // The product's bundler options for the baseline's workflows too, so both run alike.
    b = bundleWorkflowCode({
      workflowsPath,
      preloadModules: [...WORKFLOW_BUNDLER_OPTIONS.preloadModules],
      logger: new DefaultLogger('ERROR'),
    });
    bundles.set(workflowsPath, b);
  }
  return b;
}

export function writeResult(result: BenchResult): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${result.name}${result.quick ? '.quick' : ''}.json`);
  writeFileSync(`${file}.tmp`, `${JSON.stringify(result, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
  return file;
}

export function readResult(file: string): BenchResult {
  return JSON.parse(readFileSync(file, 'utf8')) as BenchResult;
}

/** Resident memory of a process tree (this process and its children), in bytes, from /proc. */
export function rssOfTree(pid: number = process.pid): number {
  return sum(processTree(pid).map(rssOf));
}

export function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Runs `fn` over `items` with at most `limit` at a time. */
export async function mapLimit<T, R>(
  items: T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      for (;;) {
        const i = next++;
        if (i >= items.length) return;
        out[i] = await fn(items[i], i);
      }
    }),
  );
  return out;
}

/**
 * The benchmarks: `npm run bench` (full) or `npm run bench -- --quick` (CI), optionally
 * `--only overhead,detection,throughput,history`. Each writes bench/results/<name>[.quick].json and
 * the run ends with one table: every figure beside the baseline measured in the same run.
 * `--table` prints the table of the results already saved, running nothing.
 */
import { existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { z } from 'zod';

import { busyHostBench } from './busy-host';
import { detectionBench } from './detection';
import { guardBench } from './guard';
import { guestViewBench } from './guest-view';
import { historyBench } from './history';
import { overheadBench } from './overhead';
import {
  type Bench,
  type BenchResult,
  machineInfo,
  readResult,
  RESULTS_DIR,
  withCauses,
  writeResult,
} from './support/common';
import { renderTable } from './support/table';
import { throughputBench } from './throughput';

const ALL: Bench[] = [
  overheadBench,
  detectionBench,
  throughputBench,
  historyBench,
  guardBench,
  busyHostBench,
  guestViewBench,
];

const argsSchema = z.object({
  quick: z.boolean(),
  /** Print (and write) the table of the results already in bench/results/, running nothing. */
  table: z.boolean(),
  only: z
    .array(z.enum(['overhead', 'detection', 'throughput', 'history', 'guard', 'busy-host', 'guest-view']))
    .optional(),
});

function parseArgs(argv: string[]): z.infer<typeof argsSchema> {
  let quick = false;
  let table = false;
  let only: string[] | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') quick = true;
    else if (a === '--table') table = true;
    else if (a === '--only') only = (argv[++i] ?? '').split(',').filter(Boolean);
    else if (a.startsWith('--only=')) only = a.slice('--only='.length).split(',').filter(Boolean);
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: tsx bench/run.ts [--quick] [--only overhead,detection,throughput,history,guard,busy-host,guest-view] [--table]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  const parsed = argsSchema.safeParse({ quick, table, only });
  if (!parsed.success) throw new Error(`bad arguments: ${parsed.error.issues.map((i) => i.message).join('; ')}`);
  return parsed.data;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const benches = ALL.filter((b) => !args.only || (args.only as string[]).includes(b.name));
  if (args.table) {
    const suffix = args.quick ? '.quick.json' : '.json';
    const saved = benches
      .map((b) => path.join(RESULTS_DIR, `${b.name}${suffix}`))
      .filter((f) => existsSync(f))
      .map(readResult);
    const table = renderTable(saved);
    console.log(table);
    if (!args.only) writeFileSync(path.join(RESULTS_DIR, `table${args.quick ? '.quick' : ''}.md`), `${table}\n`);
    return;
  }
  const results: BenchResult[] = [];
  const failures: string[] = [];
  const t0 = Date.now();
  for (const bench of benches) {
    const startedAt = new Date();
    const machine = machineInfo();
    const log = (msg: string): void => console.log(`[${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}`);
    log(`${bench.title}${args.quick ? ' (quick)' : ''}`);
    try {
      const { figures, details } = await bench.run({ quick: args.quick, log });
      const result: BenchResult = {
        name: bench.name,
        title: bench.title,
        quick: args.quick,
        startedAt: startedAt.toISOString(),
        durationSec: Math.round((Date.now() - startedAt.getTime()) / 100) / 10,
        machine,
        command: `npm run bench -- ${args.quick ? '--quick ' : ''}--only ${bench.name}`,
        figures,
        details,
      };
      results.push(result);
      log(`wrote ${path.relative(process.cwd(), writeResult(result))}`);
    } catch (err) {
      const cause = err instanceof Error && err.cause ? `\ncaused by: ${withCauses(err.cause)}` : '';
      failures.push(`${bench.name}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}${cause}`);
      log(`${bench.name} FAILED: ${String(err)}`);
    }
  }
  const table = renderTable(results);
  console.log(`\n${table}`);
  if (!args.only) writeFileSync(path.join(RESULTS_DIR, `table${args.quick ? '.quick' : ''}.md`), `${table}\n`);
  if (failures.length > 0) {
    console.error(`\n${failures.length} benchmark(s) did not run to the end:\n${failures.join('\n')}`);
    process.exitCode = 1;
  }
  // Targets are reported, not enforced: a benchmark that ran is a pass for CI; one that broke is not.
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);

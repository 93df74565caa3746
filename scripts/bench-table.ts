/**
 * The results section of docs/performance.md, generated (npm run bench:table): the table that
 * `npm run bench -- --table` writes to bench/results/table.md, and the runs it comes from (each
 * saved result's date, command, duration and load). `--check` writes nothing and exits 1 when the
 * section differs from what would be written (scripts/docs-check.ts runs the same check).
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import type { BenchResult } from '../bench/support/common';

const ROOT = path.resolve(__dirname, '..');
const RESULTS = path.join(ROOT, 'bench/results');
export const PERFORMANCE_DOC = path.join(ROOT, 'docs/performance.md');
const START = /^<!-- bench-table:start[^\n]*-->\n/m;
const END = '<!-- bench-table:end -->';

/** The generated section (between the markers) from bench/results/table.md and the full runs' JSON. */
export function benchSection(): string {
  const table = readFileSync(path.join(RESULTS, 'table.md'), 'utf8').trimEnd();
  const order = [...new Set(table.split('\n').map((line) => line.split('|')[1]?.trim() ?? ''))];
  const results = readdirSync(RESULTS)
    .filter((f) => f.endsWith('.json') && !f.endsWith('.quick.json'))
    .map((f) => JSON.parse(readFileSync(path.join(RESULTS, f), 'utf8')) as BenchResult)
    .filter((r) => order.includes(r.name))
    .sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
  const runs = results.map((r) => {
    const m = r.machine;
    return `| ${r.name} | ${r.startedAt.slice(0, 16).replace('T', ' ')} UTC | \`${r.command}\` | ${r.durationSec} s | ${m.loadAvg1mAtStart} |`;
  });
  const machines = [
    ...new Set(
      results.map(({ machine: m }) =>
        [
          `${m.cpus} CPUs (${m.cpuModel})`,
          `${m.memGiB} GiB`,
          m.kernel,
          `Node ${m.node}`,
          m.qemu,
          `Temporal CLI ${m.temporalCli}`,
        ].join(', '),
      ),
    ),
  ];
  return [
    'The runs the table comes from:',
    '',
    '| benchmark | started | command | took | load average at start |',
    '| --- | --- | --- | --- | --- |',
    ...runs,
    '',
    `On: ${machines.join('; ')}.`,
    '',
    table,
    '',
  ].join('\n');
}

/** docs/performance.md with its generated section replaced by `section`. */
export function withSection(doc: string, section: string): string {
  const start = START.exec(doc);
  const end = doc.indexOf(END);
  if (!start || end < start.index) throw new Error(`${PERFORMANCE_DOC}: no bench-table:start/end markers`);
  const from = start.index + start[0].length;
  return `${doc.slice(0, from)}${section}${doc.slice(end)}`;
}

/** The problem with the generated section, if any (for the docs check). */
export function checkBenchSection(): string | undefined {
  const doc = readFileSync(PERFORMANCE_DOC, 'utf8');
  if (withSection(doc, benchSection()) !== doc) {
    return 'docs/performance.md: the results section differs from bench/results/: run npm run bench:table';
  }
  return undefined;
}

if (require.main === module) {
  if (process.argv.includes('--check')) {
    const problem = checkBenchSection();
    if (problem) {
      console.error(problem);
      process.exit(1);
    }
  } else {
    writeFileSync(PERFORMANCE_DOC, withSection(readFileSync(PERFORMANCE_DOC, 'utf8'), benchSection()));
    console.log('docs/performance.md: results section written from bench/results/');
  }
}

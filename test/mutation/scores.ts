/**
 * The mutation score per file as test/mutation/stryker-incremental.json records it, the way
 * StrykerJS counts it: killed and timed-out mutants are detected; survivors and mutants no test
 * reaches are not; compile errors and ignored mutants do not count. Exits 1 when a file of
 * stryker.config.json's `mutate` set has no recorded result or one for another version of it; 2 when
 * the total is below its break threshold. `make mutate-ci` prints it when nothing the record depends on changed.
 */
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { z } from 'zod';

const configSchema = z.object({
  mutate: z.array(z.string()),
  incrementalFile: z.string(),
  thresholds: z.object({ break: z.number() }),
});
const recordSchema = z.object({
  files: z.record(z.string(), z.object({ source: z.string(), mutants: z.array(z.object({ status: z.string() })) })),
});

const DETECTED = new Set(['Killed', 'Timeout']);
const UNDETECTED = new Set(['Survived', 'NoCoverage']);

/** The files a `mutate` entry names: a path, or a directory's `*.ts`; a `:lines` suffix is a range of one file. */
function filesOf(pattern: string): string[] {
  const file = pattern.replace(/^!/, '').replace(/:[\d-]+$/, '');
  if (!file.includes('*')) return [file];
  const dir = path.dirname(file);
  const suffix = path.basename(file).replace(/^\*/, '');
  return readdirSync(dir)
    .filter((f) => f.endsWith(suffix))
    .map((f) => path.join(dir, f));
}

/** One line of the table: the score is detected over detected and undetected. */
function row(name: string, mutants: string, detected: number, undetected: number): string {
  const valid = detected + undetected;
  const score = valid === 0 ? 'n/a' : `${((100 * detected) / valid).toFixed(1)} %`;
  return `${name.padEnd(44)} ${mutants.padStart(7)} ${String(detected).padStart(8)} ${String(undetected).padStart(10)} ${score.padStart(8)}`;
}

function main(): number {
  const config = configSchema.parse(JSON.parse(readFileSync('stryker.config.json', 'utf8')));
  const record = recordSchema.parse(JSON.parse(readFileSync(config.incrementalFile, 'utf8')));
  const excluded = new Set(config.mutate.filter((p) => p.startsWith('!')).flatMap(filesOf));
  const mutated = [...new Set(config.mutate.filter((p) => !p.startsWith('!')).flatMap(filesOf))].filter(
    (f) => !excluded.has(f),
  );

  const rows: string[] = [];
  let detected = 0;
  let valid = 0;
  const unmeasured: string[] = [];
  const stale: string[] = [];
  for (const file of mutated) {
    const recorded = record.files[file];
    if (!recorded) {
      unmeasured.push(file);
      continue;
    }
    if (recorded.source !== readFileSync(file, 'utf8')) stale.push(file);
    const { mutants } = recorded;
    const count = (statuses: Set<string>): number => mutants.filter((m) => statuses.has(m.status)).length;
    const d = count(DETECTED);
    const u = count(UNDETECTED);
    detected += d;
    valid += d + u;
    rows.push(row(file, String(mutants.length), d, u));
  }
  console.log(`${'file'.padEnd(44)} mutants detected undetected    score`);
  for (const r of rows) console.log(r);
  const total = valid === 0 ? 100 : (100 * detected) / valid;
  console.log(row('all files', '', detected, valid - detected));
  console.log('survivors judged equivalent, with their reasons: test/mutation/equivalent-mutants.md');

  if (unmeasured.length > 0 || stale.length > 0) {
    if (unmeasured.length > 0) console.error(`no recorded mutation result for: ${unmeasured.join(', ')}`);
    if (stale.length > 0) console.error(`recorded for another version of: ${stale.join(', ')}`);
    console.error('make mutate records them');
    return 1;
  }
  if (total < config.thresholds.break) {
    console.error(`mutation score ${total.toFixed(1)} % is below the break threshold ${config.thresholds.break} %`);
    return 2;
  }
  return 0;
}

process.exitCode = main();

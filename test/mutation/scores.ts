/**
 * The mutation score per file as the mutation sets' records hold it (SETS: each StrykerJS config and
 * its incremental file), the way StrykerJS counts it: killed and timed-out mutants are detected;
 * survivors and mutants no test reaches are not; compile errors and ignored mutants do not count.
 * Survivors listed (file, line, mutator) in equivalent-mutants.md are counted apart; a mutant no
 * test reaches is never equivalent, listed or not. Exits 1 when a file of a config's `mutate` set
 * has no recorded result or one for another version of it; 2 when the total is below its break
 * threshold; 3 when a survivor is neither killed nor listed. `make mutate-ci` prints it when nothing
 * the records depend on changed. `--markdown` prints the table in Markdown. With `--sets`, prints
 * each config, its record and its jest config, one set per line, for scripts/mutate-changed.sh.
 */
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { z } from 'zod';

import { readStrykerOptions } from './stryker-options';

const configSchema = z.object({
  mutate: z.array(z.string()),
  incrementalFile: z.string(),
  jest: z.object({ configFile: z.string() }),
  thresholds: z.object({ break: z.number() }),
});
/**
 * The mutation sets, each with its own record: the engine (stryker.config.json, the base of the
 * others), storage, libvirt, the guard, and the schemas and paths, whose static mutants are tested too.
 */
const SETS = [
  'stryker.config.json',
  'test/mutation/stryker.storage.config.mjs',
  'test/mutation/stryker.libvirt.config.mjs',
  'test/mutation/stryker.guard.config.mjs',
  'test/mutation/stryker.domain.config.mjs',
];

type Config = z.infer<typeof configSchema>;
async function loadConfig(file: string): Promise<Config> {
  return configSchema.parse(await readStrykerOptions(file));
}

/** The files a config mutates. */
function mutatedBy(config: Config): string[] {
  const excluded = new Set(config.mutate.filter((p) => p.startsWith('!')).flatMap(filesOf));
  return [...new Set(config.mutate.filter((p) => !p.startsWith('!')).flatMap(filesOf))].filter((f) => !excluded.has(f));
}

const mutantSchema = z.object({
  status: z.string(),
  mutatorName: z.string(),
  replacement: z.string().optional(),
  location: z.object({ start: z.object({ line: z.number(), column: z.number() }) }),
});
type Mutant = z.infer<typeof mutantSchema>;
const recordSchema = z.object({
  files: z.record(z.string(), z.object({ source: z.string(), mutants: z.array(mutantSchema) })),
});
const EQUIVALENTS = 'test/mutation/equivalent-mutants.md';

const TIMEOUT = new Set(['Timeout']);
const DETECTED = new Set(['Killed', ...TIMEOUT]);
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

/**
 * The survivors judged equivalent: per file, the lines of each row of equivalent-mutants.md's
 * table (`41`, `109, 122, 183`, `92–93`) with the mutators the row names.
 */
function readEquivalents(): Map<string, { lines: Set<number>; mutators: Set<string> }[]> {
  const byFile = new Map<string, { lines: Set<number>; mutators: Set<string> }[]>();
  for (const line of readFileSync(EQUIVALENTS, 'utf8').split('\n')) {
    const cells = line.split('|').map((c) => c.trim());
    if (cells.length < 6 || !cells[1].startsWith('src/')) continue;
    const lines = new Set<number>();
    for (const part of cells[2].split(',')) {
      const [from, to = from] = part.split(/[–-]/).map((n) => Number(n.trim()));
      for (let n = from; n <= to; n++) lines.add(n);
    }
    const mutators = new Set(cells[3].split(',').map((m) => m.trim()));
    byFile.set(cells[1], [...(byFile.get(cells[1]) ?? []), { lines, mutators }]);
  }
  return byFile;
}

const pct = (part: number, whole: number): string => (whole === 0 ? 'n/a' : `${((100 * part) / whole).toFixed(1)} %`);

/**
 * One line of the table: the score is detected over detected and undetected; then without the
 * equivalent ones. Timeouts (detected) are shown apart: a timeout is a hang only if the run was not
 * slow, so "killed only" counts them as undetected, the score's lower bound.
 */
function row(
  name: string,
  mutants: string,
  detected: number,
  timeouts: number,
  undetected: number,
  equivalent: number,
): string {
  const score = pct(detected, detected + undetected);
  const without = pct(detected, detected + undetected - equivalent);
  const killedOnly = pct(detected - timeouts, detected + undetected - equivalent);
  const cells = [name, mutants, detected, timeouts, undetected, equivalent, score, without, killedOnly];
  if (MARKDOWN) return `| ${cells.join(' | ')} |`;
  return `${name.padEnd(44)} ${mutants.padStart(7)} ${String(detected).padStart(8)} ${String(timeouts).padStart(8)} ${String(undetected).padStart(10)} ${String(equivalent).padStart(10)} ${score.padStart(8)} ${without.padStart(16)} ${killedOnly.padStart(14)}`;
}

/** `--markdown`: the table as docs/development.md shows it. */
const MARKDOWN = process.argv.includes('--markdown');

async function main(): Promise<number> {
  const configs = await Promise.all(SETS.map(loadConfig));
  if (process.argv.includes('--sets')) {
    SETS.forEach((file, i) => console.log(`${file} ${configs[i].incrementalFile} ${configs[i].jest.configFile}`));
    return 0;
  }
  const mutated = configs.flatMap((config) => {
    const record = recordSchema.parse(JSON.parse(readFileSync(config.incrementalFile, 'utf8')));
    return mutatedBy(config).map((file) => ({ file, recorded: record.files[file] }));
  });
  const breakAt = Math.max(...configs.map((c) => c.thresholds.break));

  const equivalents = readEquivalents();
  const rows: string[] = [];
  let detected = 0;
  let timeouts = 0;
  let valid = 0;
  let equivalent = 0;
  const unexplained: string[] = [];
  const unmeasured: string[] = [];
  const stale: string[] = [];
  for (const { file, recorded } of mutated) {
    if (!recorded) {
      unmeasured.push(file);
      continue;
    }
    if (recorded.source !== readFileSync(file, 'utf8')) stale.push(file);
    const { mutants } = recorded;
    const count = (statuses: Set<string>): number => mutants.filter((m) => statuses.has(m.status)).length;
    const d = count(DETECTED);
    const t = count(TIMEOUT);
    const u = count(UNDETECTED);
    const listed = equivalents.get(file) ?? [];
    const isEquivalent = (m: Mutant): boolean =>
      m.status === 'Survived' &&
      listed.some((e) => e.lines.has(m.location.start.line) && e.mutators.has(m.mutatorName));
    let e = 0;
    for (const m of mutants.filter((m) => UNDETECTED.has(m.status))) {
      if (isEquivalent(m)) e++;
      else
        unexplained.push(
          `${file}:${m.location.start.line}:${m.location.start.column} ${m.mutatorName} → ${m.replacement ?? '?'} (${m.status})`,
        );
    }
    detected += d;
    timeouts += t;
    valid += d + u;
    equivalent += e;
    rows.push(row(file, String(mutants.length), d, t, u, e));
  }
  if (MARKDOWN)
    console.log(
      '| File | Mutants | Detected | of which timeouts | Undetected | Equivalent | Score | Score without equivalent | Killed only |\n|---|---|---|---|---|---|---|---|---|',
    );
  else
    console.log(
      `${'file'.padEnd(44)} mutants detected timeouts undetected equivalent    score  without equivalent    killed only`,
    );
  for (const r of rows) console.log(r);
  const total = valid === 0 ? 100 : (100 * detected) / valid;
  console.log(row('all files', '', detected, timeouts, valid - detected, equivalent));
  console.log(`survivors judged equivalent, with their reasons: ${EQUIVALENTS}`);
  if (unexplained.length > 0) {
    console.log(`survivors neither killed nor listed in ${EQUIVALENTS}:`);
    for (const u of unexplained) console.log(`  ${u}`);
  }

  if (unmeasured.length > 0 || stale.length > 0) {
    if (unmeasured.length > 0) console.error(`no recorded mutation result for: ${unmeasured.join(', ')}`);
    if (stale.length > 0) console.error(`recorded for another version of: ${stale.join(', ')}`);
    console.error('make mutate records them');
    return 1;
  }
  if (total < breakAt) {
    console.error(`mutation score ${total.toFixed(1)} % is below the break threshold ${breakAt} %`);
    return 2;
  }
  if (unexplained.length > 0) {
    console.error(`${unexplained.length} surviving mutant(s) neither killed by a test nor judged equivalent`);
    return 3;
  }
  return 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);

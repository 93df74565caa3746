/**
 * A throughput phase as a process of its own: `node --import tsx bench/throughput/phase-main.ts SPEC.json`.
 * Writes the PhaseResult to the spec's resultFile; progress and the load markers go to stdout.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';

import { describeIssues } from '../../src/domain/input';
import { phaseSpecSchema, runPhase } from './phase';

async function main(): Promise<void> {
  const file = process.argv[2];
  if (!file) throw new Error('usage: phase-main.ts SPEC.json');
  const parsed = phaseSpecSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
  if (!parsed.success) throw new Error(`invalid phase spec ${file}: ${describeIssues(parsed.error)}`);
  const result = await runPhase(parsed.data, (line) => console.log(line));
  writeFileSync(`${parsed.data.resultFile}.tmp`, JSON.stringify(result));
  renameSync(`${parsed.data.resultFile}.tmp`, parsed.data.resultFile);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);

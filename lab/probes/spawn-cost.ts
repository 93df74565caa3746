/**
 * What the merge step's space measure costs, and how much of it is the spawn: the median of 30
 * calls each of spawning `true`, `qemu-img --version`, the top's allocation map
 * (storage/space.ts allocatedRanges) and the whole measure, from this Node process, on two small
 * qcow2 images in a scratch directory. Prints one line per figure.
 *
 *   npx tsx lab/probes/spawn-cost.ts
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { allocatedRanges, measureCommitSpace } from '../../src/storage/space';

const run = promisify(execFile);
const CALLS = 30;

async function medianMs(fn: () => Promise<unknown>): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return ms.sort((a, b) => a - b)[Math.floor(CALLS / 2)];
}

async function main(): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lm-spawn-'));
  try {
    const [base, top] = [path.join(dir, 'base.qcow2'), path.join(dir, 'top.qcow2')];
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', base, '16M']);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
    const figures: Array<[string, () => Promise<unknown>]> = [
      ['spawn true', () => run('true', [])],
      ['spawn qemu-img --version', () => run('qemu-img', ['--version'])],
      ['allocation map of the top (qemu-img map)', () => allocatedRanges(top)],
      ['space measure (map, geometry, statfs)', () => measureCommitSpace(top, base)],
    ];
    for (const [label, fn] of figures) console.log(`${label}: p50 ${(await medianMs(fn)).toFixed(1)} ms`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

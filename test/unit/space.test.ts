import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { readQcow2Geometry } from '../../src/host/qemu-img';
import {
  alignRanges,
  allocatedRanges,
  COMMIT_SPACE_MARGIN,
  commitGrowthBound,
  measureCommitSpace,
} from '../../src/host/space';

/** The space rule of host/space.ts on real qcow2 files, checked against what `qemu-img commit` really adds. */

const run = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;
let dir: string;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(tmpdir(), 'lm-space-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function chain(baseOpts: string[] = []): Promise<{ base: string; top: string }> {
  const base = path.join(dir, 'base.qcow2');
  const top = path.join(dir, 'top.qcow2');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', ...baseOpts, base, '1G']);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top]);
  return { base, top };
}

const io = (file: string, ...cmds: string[]) =>
  run('qemu-io', ['-f', 'qcow2', ...cmds.flatMap((c) => ['-c', c]), file]);

async function allocated(file: string): Promise<number> {
  return (await fs.stat(file)).blocks * 512;
}

test('the ranges allocated in the top itself: data and zero clusters, not the backing file', async () => {
  const { base, top } = await chain();
  await io(base, 'write -P 0x11 0 8M');
  await io(top, 'write -P 0x22 1M 1M', 'write -z 100M 4M', 'write -P 0x33 600M 64k');
  expect(await allocatedRanges(top)).toEqual([
    { start: 1 * MiB, length: 1 * MiB },
    { start: 100 * MiB, length: 4 * MiB },
    { start: 600 * MiB, length: 64 * KiB },
  ]);
});

test('ranges are widened to whole clusters and merged', () => {
  expect(
    alignRanges(
      [
        { start: 70 * KiB, length: 1 },
        { start: 10, length: 10 },
        { start: 64 * KiB, length: 1 },
      ],
      64 * KiB,
    ),
  ).toEqual([{ start: 0, length: 128 * KiB }]);
});

test('the bound counts clusters, L2 tables and refcount blocks of the base', async () => {
  const geometry = { clusterBytes: 64 * KiB, refcountBits: 16, l2EntryBytes: 8 };
  // 1 MiB in one L2 span (512 MiB) and 64 KiB in another: 17 clusters, 2 L2 tables, 1 + 1 refcount blocks.
  const ranges = [
    { start: 0, length: MiB },
    { start: 600 * MiB, length: 1 },
  ];
  expect(commitGrowthBound(ranges, geometry)).toBe((17 + 2 + 2) * 64 * KiB);
  // A base with 2 MiB clusters allocates a whole cluster for one byte: 1 data, 1 L2, 1 + 1 refcount blocks.
  expect(commitGrowthBound([{ start: 0, length: 1 }], { ...geometry, clusterBytes: 2 * MiB })).toBe(
    (1 + 1 + 2) * 2 * MiB,
  );
});

test.each([
  ['64 KiB clusters', []],
  ['a base with 1 MiB clusters', ['-o', 'cluster_size=1M']],
])(
  'the bound is never below what qemu-img commit adds to the base (%s), zero clusters included',
  async (_name, opts) => {
    const { base, top } = await chain(opts);
    await io(base, 'write -P 0x11 0 4M');
    // Overlapping, scattered, and zero clusters (counted as data: a commit may write them so).
    await io(top, 'write -P 0x22 2M 4M', 'write -z 64M 8M', 'write -P 0x33 513M 4k', 'write -P 0x44 900M 300k');
    const geometry = await readQcow2Geometry(base);
    expect(geometry?.clusterBytes).toBe(opts.length ? MiB : 64 * KiB);
    const space = await measureCommitSpace(top, base);
    const before = await allocated(base);
    await run('qemu-img', ['commit', '-q', '-d', top]);
    const growth = (await allocated(base)) - before;
    expect(growth).toBeGreaterThan(0);
    expect(space.growthBytes).toBeGreaterThanOrEqual(growth);
    // The top allocates whole clusters of its own (64 KiB): 4 KiB takes one, 300 KiB five.
    expect(space.topAllocatedBytes).toBe(4 * MiB + 8 * MiB + 64 * KiB + 320 * KiB);
    expect(space.marginBytes).toBe(
      COMMIT_SPACE_MARGIN.fixedBytes + Math.ceil(space.growthBytes * COMMIT_SPACE_MARGIN.fractionOfGrowth),
    );
    expect(space.neededBytes).toBe(space.growthBytes + space.marginBytes);
    expect(space.baseDir).toBe(dir);
    expect(space.freeBytes).toBeGreaterThan(0);
    console.log(`${_name}: growth ${growth}, bound ${space.growthBytes}, top file ${await allocated(top)}`);
  },
);

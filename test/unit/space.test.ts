import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { readQcow2Geometry } from '../../src/storage/qemu-img';
import {
  alignRanges,
  allocatedRanges,
  COMMIT_SPACE_MARGIN,
  commitGrowthBound,
  commitSpaceMargin,
  freeBytes,
  measureCommitSpace,
  parseAllocatedRanges,
} from '../../src/storage/space';

/** The space rule of storage/space.ts on real qcow2 files, checked against what `qemu-img commit` really adds. */

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

/** Resolves once another process holds `file`'s write lock (qemu-img info without -U then fails). */
async function waitUntilLocked(file: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const locked = await run('qemu-img', ['info', file]).then(
      () => false,
      () => true,
    );
    if (locked) return;
    if (Date.now() > deadline) throw new Error(`${file} was never locked`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

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

test('a top the running VM holds locked is still read, without taking its lock', async () => {
  const { top } = await chain();
  await io(top, 'write -P 0x22 0 64k');
  // qemu-io holds the top open read-write (and locked) for as long as its sleep lasts.
  const holder = execFile('qemu-io', ['-f', 'qcow2', '-c', 'sleep 20000', top]);
  try {
    await waitUntilLocked(top);
    expect(await allocatedRanges(top)).toEqual([{ start: 0, length: 64 * KiB }]);
  } finally {
    holder.kill();
  }
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

test('ranges that touch or lie inside another merge into one; apart, they stay apart, in order', () => {
  const unit = 64 * KiB;
  expect(
    alignRanges(
      [
        { start: 4 * unit, length: unit },
        { start: 0, length: 2 * unit },
        { start: 2 * unit, length: 1 },
        { start: unit, length: 1 },
      ],
      unit,
    ),
  ).toEqual([
    { start: 0, length: 3 * unit },
    { start: 4 * unit, length: unit },
  ]);
});

test('a range that ends at an L2 span boundary needs no table past it; one byte more needs the next', () => {
  const geometry = { clusterBytes: 64 * KiB, refcountBits: 16, l2EntryBytes: 8 };
  const span = 512 * MiB;
  // 8192 clusters and 1 L2 table; one byte more, 8193 and 2: each 1 + 1 refcount blocks (32768 clusters each).
  expect(commitGrowthBound([{ start: 0, length: span }], geometry)).toBe((8192 + 1 + 2) * 64 * KiB);
  expect(commitGrowthBound([{ start: 0, length: span + 1 }], geometry)).toBe((8193 + 2 + 2) * 64 * KiB);
  // 64-bit refcounts, 8192 clusters per block: the 8193 new clusters need 2 + 1.
  expect(commitGrowthBound([{ start: 0, length: span }], { ...geometry, refcountBits: 64 })).toBe(
    (8192 + 1 + 3) * 64 * KiB,
  );
});

test('a base that is not qcow2 grows by its data alone, rounded to 64 KiB', () => {
  expect(
    commitGrowthBound(
      [
        { start: 10, length: 1 },
        { start: MiB, length: 64 * KiB + 1 },
      ],
      undefined,
    ),
  ).toBe(3 * 64 * KiB);
  expect(commitGrowthBound([], undefined)).toBe(0);
});

test('the margin: 64 MiB and 1 % of the bound, rounded up', () => {
  expect(commitSpaceMargin(0)).toBe(64 * MiB);
  expect(commitSpaceMargin(101)).toBe(64 * MiB + 2);
});

test('free bytes as df counts them for an unprivileged writer', async () => {
  const { stdout } = await run('df', ['-B1', '--output=avail', dir]);
  const df = Number(stdout.trim().split('\n')[1]);
  // Other writers may change it between the two reads: within 64 MiB.
  expect(Math.abs((await freeBytes(dir)) - df)).toBeLessThan(64 * MiB);
});

test('a top qemu-img cannot read is thrown with its words', async () => {
  const missing = path.join(dir, 'missing.qcow2');
  await expect(allocatedRanges(missing)).rejects.toThrow(
    /^qemu-img map of .*missing\.qcow2 failed: qemu-img: .*No such file/,
  );
});

describe('a qemu-img map that prints what this QEMU would not', () => {
  test('no JSON, or JSON of another shape: thrown, no ranges made up', () => {
    // The first 200 characters of what it printed, and no more.
    expect(() => parseAllocatedRanges(`not json ${'x'.repeat(300)}`, '/x.qcow2')).toThrow(
      /^qemu-img map of \/x\.qcow2 printed no JSON: not json x{191}$/,
    );
    expect(() =>
      parseAllocatedRanges('[{"start": 0, "length": -1, "depth": 0, "zero": false, "data": true}]', '/x.qcow2'),
    ).toThrow(/^unexpected qemu-img map output for \/x\.qcow2: /);
  });

  test("without `present` (older QEMU), data or zero is the image's own; deeper and empty ranges are not", () => {
    const map = JSON.stringify([
      { start: 0, length: 65536, depth: 0, zero: false, data: true },
      { start: 65536, length: 65536, depth: 0, zero: true, data: false },
      { start: 131072, length: 65536, depth: 0, zero: false, data: false },
      { start: 196608, length: 65536, depth: 1, zero: false, data: true, present: true },
      { start: 262144, length: 0, depth: 0, zero: false, data: true, present: true },
      { start: 327680, length: 65536, depth: 0, zero: false, data: true, present: false },
      { start: 393216, length: 65536, depth: 0, zero: false, data: false, present: true },
    ]);
    expect(parseAllocatedRanges(map, '/x.qcow2')).toEqual([
      { start: 0, length: 65536 },
      { start: 65536, length: 65536 },
      { start: 393216, length: 65536 },
    ]);
  });
});

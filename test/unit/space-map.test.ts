/**
 * The allocation map read as qemu-img prints it: whole when it is long, and its failures thrown with
 * qemu-img's own words and the error underneath.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { allocatedRanges, parseAllocatedRanges } from '../../src/storage/space';

const run = promisify(execFile);
let dir: string;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(tmpdir(), 'lm-space-map-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

test('a map of more than 1 MiB of JSON (every other 512-byte cluster allocated) is read whole', async () => {
  const top = path.join(dir, 'top.qcow2');
  const clusters = 12_000;
  // Data in every other 512-byte cluster: convert leaves the zero ones unallocated (-S 512).
  const raw = Buffer.alloc(2 * clusters * 512);
  for (let i = 0; i < clusters; i++) raw.fill(1, 2 * i * 512, (2 * i + 1) * 512);
  await fs.writeFile(path.join(dir, 'top.raw'), raw);
  await run('qemu-img', [
    'convert',
    '-q',
    '-S',
    '512',
    '-f',
    'raw',
    '-O',
    'qcow2',
    '-o',
    'cluster_size=512',
    path.join(dir, 'top.raw'),
    top,
  ]);
  const { stdout } = await run('qemu-img', ['map', '--output=json', top], { maxBuffer: 64 * 1024 * 1024 });
  expect(stdout.length).toBeGreaterThan(1024 * 1024);
  const ranges = await allocatedRanges(top);
  expect(ranges).toHaveLength(clusters);
  expect(ranges[clusters - 1]).toEqual({ start: 2 * (clusters - 1) * 512, length: 512 });
});

test("a failed map is thrown with qemu-img's words, trimmed, and the error underneath", async () => {
  const missing = path.join(dir, 'missing.qcow2');
  const err = await allocatedRanges(missing).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).message).toMatch(/^qemu-img map of .*missing\.qcow2 failed: qemu-img: \S.*\S$/s);
  expect((err as Error).cause).toMatchObject({ code: 1, stderr: expect.stringMatching(/^qemu-img: /) });
});

test('output that is no JSON is thrown with the parse error underneath', () => {
  let err: unknown;
  try {
    parseAllocatedRanges('not json', '/x.qcow2');
  } catch (e) {
    err = e;
  }
  expect((err as Error).cause).toBeInstanceOf(SyntaxError);
});

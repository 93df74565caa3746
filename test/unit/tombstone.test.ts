/**
 * Tombstones on real files: where one is written, and which ones count. A tombstone read as
 * another volume's, or one that does not parse, would make a disk `alreadyMerged`: it is thrown.
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { imageDir } from '../../src/domain/layout';
import { readTombstone, type Tombstone, writeTombstone } from '../../src/storage/tombstone';

let root: string;
const t: Tombstone = { volumeId: 'v1', mergedInto: 'v0', deletedAt: '2024-05-01T10:00:00.000Z' };
const file = (): string => path.join(imageDir(root, 'd1'), '.v1.merged.json');

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(tmpdir(), 'lm-tombstone-'));
  await fs.mkdir(imageDir(root, 'd1'), { recursive: true });
});
afterEach(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

test("written as the volume's hidden file in its disk's image dir, whole (no temporary file left), and read back", async () => {
  await writeTombstone(root, 'd1', t);
  expect(await fs.readdir(imageDir(root, 'd1'))).toEqual(['.v1.merged.json']);
  expect(JSON.parse(await fs.readFile(file(), 'utf8'))).toEqual(t);
  expect(await readTombstone(root, 'd1', 'v1')).toEqual(t);
});

test("no tombstone: undefined; another volume's or another disk's does not count", async () => {
  await fs.mkdir(imageDir(root, 'd2'));
  await writeTombstone(root, 'd1', t);
  expect(await readTombstone(root, 'd1', 'v2')).toBeUndefined();
  expect(await readTombstone(root, 'd2', 'v1')).toBeUndefined();
});

test('a tombstone that records another volume is thrown', async () => {
  await fs.writeFile(file(), JSON.stringify({ ...t, volumeId: 'v9' }));
  await expect(readTombstone(root, 'd1', 'v1')).rejects.toThrow(`tombstone ${file()} is of volume v9, not v1`);
});

test('a tombstone that does not parse is thrown', async () => {
  await fs.writeFile(file(), JSON.stringify({ volumeId: 'v1', deletedAt: t.deletedAt }));
  await expect(readTombstone(root, 'd1', 'v1')).rejects.toThrow(/mergedInto/);
  await fs.writeFile(file(), JSON.stringify({ ...t, mergedInto: 0 }));
  await expect(readTombstone(root, 'd1', 'v1')).rejects.toThrow(/mergedInto/);
  await fs.writeFile(file(), '{"volumeId": "v1", ');
  await expect(readTombstone(root, 'd1', 'v1')).rejects.toThrow(SyntaxError);
});

test('a tombstone that cannot be read is thrown', async () => {
  await fs.mkdir(file());
  await expect(readTombstone(root, 'd1', 'v1')).rejects.toThrow(/EISDIR/);
});

test('a tombstone is replaced whole: the rename of a complete temporary file', async () => {
  await writeTombstone(root, 'd1', t);
  const rename = jest.spyOn(fs, 'rename');
  try {
    await writeTombstone(root, 'd1', { ...t, mergedInto: 'v5' });
    expect(rename.mock.calls).toEqual([[`${file()}.tmp`, file()]]);
  } finally {
    rename.mockRestore();
  }
  expect(await readTombstone(root, 'd1', 'v1')).toEqual({ ...t, mergedInto: 'v5' });
});

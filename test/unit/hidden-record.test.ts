/**
 * The write shared by the tombstone and the pivot record (src/storage/hidden-record.ts): each
 * decides later what is deleted or skipped, so each reaches the disk before the rename makes it
 * visible, and the rename itself is synced with its directory. Seen by watching the file handles.
 */
import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { imageDir } from '../../src/domain/layout';
import { recordPivotRequest } from '../../src/storage/pivot-record';
import { writeTombstone } from '../../src/storage/tombstone';

let root: string;

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(tmpdir(), 'lm-hidden-'));
  await fs.mkdir(imageDir(root, 'd1'), { recursive: true });
});
afterEach(async () => {
  jest.restoreAllMocks();
  await fs.rm(root, { recursive: true, force: true });
});

/** Each step of the write, in order: the files opened, synced, closed, and the rename. */
function watchWrites(): string[] {
  const steps: string[] = [];
  const name = (p: unknown): string => path.basename(String(p));
  const open = fs.open.bind(fs);
  jest.spyOn(fs, 'open').mockImplementation(async (p, flags, mode) => {
    const handle: FileHandle = await open(p, flags, mode);
    steps.push(`open ${name(p)}`);
    const sync = handle.sync.bind(handle);
    jest.spyOn(handle, 'sync').mockImplementation(async () => {
      await sync();
      steps.push(`sync ${name(p)}`);
    });
    const close = handle.close.bind(handle);
    jest.spyOn(handle, 'close').mockImplementation(async () => {
      await close();
      steps.push(`close ${name(p)}`);
    });
    return handle;
  });
  const rename = fs.rename.bind(fs);
  jest.spyOn(fs, 'rename').mockImplementation(async (from, to) => {
    await rename(from, to);
    steps.push(`rename ${name(from)} ${name(to)}`);
  });
  return steps;
}

test.each([
  [
    'tombstone',
    '.v1.merged.json',
    () => writeTombstone(root, 'd1', { volumeId: 'v1', mergedInto: 'v0', deletedAt: 'x' }),
  ],
  ['pivot record', '.v1.pivot.json', () => recordPivotRequest(root, 'd1', 'v1')],
])('the %s is synced before its rename, and the rename with its directory', async (_kind, file, write) => {
  const steps = watchWrites();
  await write();
  expect(steps).toEqual([
    `open ${file}.tmp`,
    `sync ${file}.tmp`,
    `close ${file}.tmp`,
    `rename ${file}.tmp ${file}`,
    'open d1',
    'sync d1',
    'close d1',
  ]);
  expect(await fs.readdir(imageDir(root, 'd1'))).toEqual([file]);
});

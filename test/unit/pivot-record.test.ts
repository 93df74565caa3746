/**
 * The pivot record on real files: written whole before the pivot is asked for, confirmed once,
 * never overwritten by a second request, and thrown when it cannot be read (a record that cannot
 * be read cannot say that no pivot was asked for).
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { imageDir } from '../../src/domain/layout';
import { confirmPivot, readPivotRecord, recordPivotRequest, removePivotRecord } from '../../src/storage/pivot-record';

let root: string;
const file = (): string => path.join(imageDir(root, 'd1'), '.v2.pivot.json');
const iso = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(tmpdir(), 'lm-pivot-'));
  await fs.mkdir(imageDir(root, 'd1'), { recursive: true });
});
afterEach(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

test("the request is the top's hidden file in its disk's image dir, whole (no temporary file left)", async () => {
  expect(await readPivotRecord(root, 'd1', 'v2')).toBeUndefined();
  await recordPivotRequest(root, 'd1', 'v2');
  expect(await fs.readdir(imageDir(root, 'd1'))).toEqual(['.v2.pivot.json']);
  const record = JSON.parse(await fs.readFile(file(), 'utf8')) as { requestedAt: string };
  expect(record).toEqual({ topVolumeId: 'v2', requestedAt: expect.stringMatching(iso) });
  expect(await readPivotRecord(root, 'd1', 'v2')).toEqual(record);
});

test('a second request keeps the first: its time is when the pivot may first have happened', async () => {
  await fs.writeFile(file(), JSON.stringify({ topVolumeId: 'v2', requestedAt: '2026-12-07T09:00:00.000Z' }));
  await recordPivotRequest(root, 'd1', 'v2');
  expect(await readPivotRecord(root, 'd1', 'v2')).toEqual({
    topVolumeId: 'v2',
    requestedAt: '2026-12-07T09:00:00.000Z',
  });
});

test('a confirmation keeps the request time, and a second one keeps the first', async () => {
  await fs.writeFile(file(), JSON.stringify({ topVolumeId: 'v2', requestedAt: '2026-12-07T09:00:00.000Z' }));
  await confirmPivot(root, 'd1', 'v2', await readPivotRecord(root, 'd1', 'v2'));
  const confirmed = await readPivotRecord(root, 'd1', 'v2');
  expect(confirmed).toEqual({
    topVolumeId: 'v2',
    requestedAt: '2026-12-07T09:00:00.000Z',
    confirmedAt: expect.stringMatching(iso),
  });
  await new Promise((r) => setTimeout(r, 5));
  await confirmPivot(root, 'd1', 'v2', await readPivotRecord(root, 'd1', 'v2'));
  expect(await readPivotRecord(root, 'd1', 'v2')).toEqual(confirmed);
  expect(await fs.readdir(imageDir(root, 'd1'))).toEqual(['.v2.pivot.json']);
});

test('a confirmation without a request record (lost with its disk) still records the pivot', async () => {
  await confirmPivot(root, 'd1', 'v2', await readPivotRecord(root, 'd1', 'v2'));
  const record = await readPivotRecord(root, 'd1', 'v2');
  expect(record).toEqual({
    topVolumeId: 'v2',
    requestedAt: expect.stringMatching(iso),
    confirmedAt: expect.stringMatching(iso),
  });
});

test('records are per top: another top of the disk has none', async () => {
  await recordPivotRequest(root, 'd1', 'v2');
  expect(await readPivotRecord(root, 'd1', 'v3')).toBeUndefined();
});

test('a record that does not parse, or names another volume, is thrown', async () => {
  await fs.writeFile(file(), '{"topVolumeId":"v2"');
  await expect(readPivotRecord(root, 'd1', 'v2')).rejects.toThrow(SyntaxError);
  await fs.writeFile(file(), JSON.stringify({ topVolumeId: 'v2' }));
  await expect(readPivotRecord(root, 'd1', 'v2')).rejects.toThrow(/requestedAt/);
  await fs.writeFile(file(), JSON.stringify({ topVolumeId: 'v3', requestedAt: 'x' }));
  await expect(readPivotRecord(root, 'd1', 'v2')).rejects.toThrow(`pivot record ${file()} is of volume v3, not v2`);
});

test('an image dir that cannot be read is thrown, not read as no record', async () => {
  await fs.rm(imageDir(root, 'd1'), { recursive: true });
  await fs.writeFile(imageDir(root, 'd1'), 'a file where the dir should be');
  await expect(readPivotRecord(root, 'd1', 'v2')).rejects.toMatchObject({ code: 'ENOTDIR' });
});

test('removed with its top; removing it twice is fine', async () => {
  await recordPivotRequest(root, 'd1', 'v2');
  await removePivotRecord(root, 'd1', 'v2');
  expect(await fs.readdir(imageDir(root, 'd1'))).toEqual([]);
  await removePivotRecord(root, 'd1', 'v2');
});

test('the record and its directory are closed once written: no file of the root stays open', async () => {
  const openUnderRoot = async (): Promise<string[]> => {
    const links = await Promise.all(
      (await fs.readdir('/proc/self/fd')).map((fd) => fs.readlink(`/proc/self/fd/${fd}`).catch(() => '')),
    );
    return links.filter((l) => l.startsWith(root));
  };
  await recordPivotRequest(root, 'd1', 'v2');
  await confirmPivot(root, 'd1', 'v2', await readPivotRecord(root, 'd1', 'v2'));
  expect(await openUnderRoot()).toEqual([]);
});

/**
 * The Reclaimer on real files under a temporary storage root: what a delete takes out of its name,
 * and what the sweep at agent start unlinks (reclaim names only, nothing else in an image dir).
 */
import * as fsSync from 'node:fs';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { Reclaimer, reclaimPath } from '../../src/storage/reclaim';

let root: string;
let warnings: Array<[string, Record<string, unknown>]>;
const log = { warn: (m: string, a: Record<string, unknown>) => warnings.push([m, a]) };
const at = (...p: string[]): string => path.join(root, 'images', ...p);
const write = (file: string): Promise<void> => fs.writeFile(file, 'data');
const names = (disk: string): Promise<string[]> => fs.readdir(at(disk)).then((n) => n.sort());

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(tmpdir(), 'lm-reclaim-'));
  await fs.mkdir(at('d1'), { recursive: true });
  warnings = [];
});
afterEach(async () => {
  jest.restoreAllMocks();
  await fs.rm(root, { recursive: true, force: true });
});

test('the reclaim name is hidden, in the same directory, and no longer a *.qcow2', () => {
  expect(reclaimPath('/s/images/d1/v1.qcow2')).toBe('/s/images/d1/.v1.qcow2.reclaim');
});

describe('retire', () => {
  test('takes the file out of its name at once and unlinks it after the delay', async () => {
    const r = new Reclaimer(root, log, 300);
    await write(at('d1', 'v1.qcow2'));
    expect(await r.retire(at('d1', 'v1.qcow2'))).toBe(true);
    expect(await names('d1')).toEqual(['.v1.qcow2.reclaim']);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await names('d1')).toEqual(['.v1.qcow2.reclaim']);
    await r.drain();
    expect(await names('d1')).toEqual([]);
    expect(warnings).toEqual([]);
  });

  test('a file that is not there is a repeated delete: false, nothing else touched', async () => {
    const r = new Reclaimer(root, log, 0);
    await write(at('d1', 'v2.qcow2'));
    expect(await r.retire(at('d1', 'v1.qcow2'))).toBe(false);
    await r.drain();
    expect(await names('d1')).toEqual(['v2.qcow2']);
  });

  test('a rename that fails otherwise is thrown, the file kept under its name', async () => {
    const r = new Reclaimer(root, log, 0);
    await write(at('d1', 'v1.qcow2'));
    await fs.mkdir(at('d1', '.v1.qcow2.reclaim'));
    await write(at('d1', '.v1.qcow2.reclaim', 'x'));
    await expect(r.retire(at('d1', 'v1.qcow2'))).rejects.toThrow(/EISDIR|ENOTEMPTY|EEXIST/);
    expect(await names('d1')).toEqual(['.v1.qcow2.reclaim', 'v1.qcow2']);
  });

  test('the same name retired again after its unlink is unlinked again', async () => {
    const r = new Reclaimer(root, log, 0);
    for (let i = 0; i < 2; i++) {
      await write(at('d1', 'v1.qcow2'));
      expect(await r.retire(at('d1', 'v1.qcow2'))).toBe(true);
      await r.drain();
      expect(await names('d1')).toEqual([]);
    }
  });

  test('a reclaim name already gone at its unlink is no failure', async () => {
    const r = new Reclaimer(root, log, 200);
    await write(at('d1', 'v1.qcow2'));
    await r.retire(at('d1', 'v1.qcow2'));
    await fs.unlink(at('d1', '.v1.qcow2.reclaim'));
    await r.drain();
    expect(warnings).toEqual([]);
  });
});

describe('sweep', () => {
  test('unlinks the reclaim names of every image dir, and nothing else', async () => {
    await fs.mkdir(at('d2'));
    const kept = ['v1.qcow2', '.v1.merged.json', 'v1.qcow2.reclaim', '.v1.qcow2', '.v1.raw.reclaim', '.reclaim'];
    for (const n of kept) await write(at('d1', n));
    await write(at('d1', '.v1.qcow2.reclaim'));
    await write(at('d2', '.a.qcow2.reclaim'));
    await write(at('d2', '.b.qcow2.reclaim'));
    await write(at('loose-file'));
    const r = new Reclaimer(root, log, 60_000);
    expect(await r.sweep()).toBe(3);
    await r.drain();
    expect(await names('d1')).toEqual([...kept].sort());
    expect(await names('d2')).toEqual([]);
    expect(await fs.readFile(at('loose-file'), 'utf8')).toBe('data');
  });

  test('no images dir: nothing to sweep', async () => {
    await fs.rm(at(), { recursive: true });
    expect(await new Reclaimer(root, log).sweep()).toBe(0);
  });

  test('an images dir that cannot be listed is thrown', async () => {
    await fs.rm(at(), { recursive: true });
    await write(at());
    await expect(new Reclaimer(root, log).sweep()).rejects.toThrow(/ENOTDIR/);
  });

  test("a name a delete scheduled is left to it: unlinked once, after the delete's delay", async () => {
    const unlink = jest.spyOn(fsSync.promises, 'unlink');
    const r = new Reclaimer(root, log, 300);
    await write(at('d1', 'v1.qcow2'));
    await r.retire(at('d1', 'v1.qcow2'));
    expect(await r.sweep()).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(await names('d1')).toEqual(['.v1.qcow2.reclaim']);
    await r.drain();
    expect(unlink.mock.calls).toEqual([[at('d1', '.v1.qcow2.reclaim')]]);
    expect(await names('d1')).toEqual([]);
  });

  test('an unlink that fails is logged and tried again a minute later', async () => {
    await fs.mkdir(at('d1', '.v1.qcow2.reclaim'));
    const timers = jest.spyOn(global, 'setTimeout');
    const r = new Reclaimer(root, log);
    await r.sweep();
    await r.drain();
    expect(warnings).toEqual([
      [
        'could not reclaim a deleted volume; will try again',
        { file: at('d1', '.v1.qcow2.reclaim'), error: expect.stringMatching(/EISDIR|EPERM/) as unknown },
      ],
    ]);
    const retry = timers.mock.calls.find(([, ms]) => ms === 60_000);
    expect(retry).toBeDefined();
    // The directory is gone by the retry; a file took its name: the retry unlinks it.
    await fs.rmdir(at('d1', '.v1.qcow2.reclaim'));
    await write(at('d1', '.v1.qcow2.reclaim'));
    (retry![0] as () => void)();
    await r.drain();
    expect(await names('d1')).toEqual([]);
  });

  test('without a log of its own, a failed unlink goes to the console', async () => {
    await fs.mkdir(at('d1', '.v1.qcow2.reclaim'));
    const warn = jest.spyOn(console, 'warn').mockImplementation(() => undefined);
    const r = new Reclaimer(root);
    await r.sweep();
    await r.drain();
    expect(warn).toHaveBeenCalledWith('could not reclaim a deleted volume; will try again', {
      file: at('d1', '.v1.qcow2.reclaim'),
      error: expect.stringMatching(/EISDIR|EPERM/) as unknown,
    });
  });
});

/**
 * ImageIndex, the guard's walk of the whole storage root, on real qcow2 images in a temp dir.
 * Where a case cannot be made on this file system (a directory listing with no entry types, an
 * unlistable directory while running as root, 64-bit inode numbers, a stat that changes one
 * field of the cache key alone), `fs.statSync`/`readdirSync` are wrapped to report it, and
 * everything else stays real.
 */
import { execFile, execFileSync } from 'node:child_process';
import type * as nodeFs from 'node:fs';
import type { BigIntStats, Dirent, PathLike, Stats, StatSyncOptions } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { dirOf, readName } from '../../src/storage/image-names';
import * as qemuImg from '../../src/storage/qemu-img';
import { reclaimPath } from '../../src/storage/reclaim';
import { ImageIndex, type ImageRecord, type IndexScan } from '../../src/volume-users';

// The module object the index calls through (a spy on it is seen there).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof nodeFs;
const realStatSync = fs.statSync;
const realReaddirSync = fs.readdirSync;
const realReadImageRefs = qemuImg.readImageRefs;

const run = promisify(execFile);
let root: string;
const at = (...p: string[]): string => path.join(root, ...p);
const create = async (file: string, backing?: string): Promise<void> => {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await run('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    ...(backing ? ['-u', '-b', backing, '-F', 'qcow2'] : []),
    file,
    '1M',
  ]);
};
const rebase = (file: string, backing: string): Promise<unknown> =>
  run('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, file]);
/** Each record's backing as QEMU opens it (the names are kept as written). */
const backingOf = (r: ImageRecord | undefined): string | undefined =>
  r?.refs?.backing === undefined ? undefined : readName(r.refs.backing, dirOf(r.path)).files[0]?.path;
const backings = (scan: IndexScan): Record<string, string | undefined> =>
  Object.fromEntries([...scan.files.values()].map((r) => [path.relative(root, r.path), backingOf(r)]));

type Stat = (p: PathLike, opts?: StatSyncOptions) => Stats | BigIntStats | undefined;
/** Makes `statSync` report `change(stats)` for `file`; every other path stats as it is. */
function statAs(file: string, change: (st: BigIntStats) => Partial<BigIntStats>): void {
  jest.spyOn(fs, 'statSync').mockImplementation(((p: PathLike, opts?: StatSyncOptions) => {
    const st = (realStatSync as Stat)(p, opts);
    if (String(p) !== file || st === undefined) return st;
    return Object.assign(
      Object.create(Object.getPrototypeOf(st) as object) as BigIntStats,
      st,
      change(st as BigIntStats),
    );
  }) as typeof fs.statSync);
}

/** A directory entry as a file system without d_type reports it (DT_UNKNOWN): every is*() false. */
function unknownType(e: Dirent): Dirent {
  const no = (): boolean => false;
  return Object.assign(Object.create(Object.getPrototypeOf(e) as object) as Dirent, e, {
    isFile: no,
    isDirectory: no,
    isSymbolicLink: no,
    isFIFO: no,
    isSocket: no,
    isBlockDevice: no,
    isCharacterDevice: no,
  });
}

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'image-index-'));
});
afterEach(() => {
  jest.restoreAllMocks();
  fs.rmSync(root, { recursive: true, force: true });
});

describe('the walk', () => {
  test('every directory, every file and symlink to a file; not reclaim names, fifos, sockets or directory symlinks', async () => {
    await create(at('a/base.qcow2'));
    await create(at('a/x.qcow2'), 'base.qcow2');
    fs.mkdirSync(at('b'));
    fs.symlinkSync('../a/x.qcow2', at('b/link.qcow2')); // relative backing resolves against b/
    await create(at('a/old.qcow2'), 'base.qcow2');
    fs.renameSync(at('a/old.qcow2'), reclaimPath(at('a/old.qcow2')));
    execFileSync('mkfifo', [at('a/pipe')]);
    fs.symlinkSync('nowhere', at('a/dangling'));
    fs.symlinkSync('loop', at('a/loop'));
    // A symlink to a directory, here one outside the root, is not walked.
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'image-index-outside-'));
    try {
      await create(path.join(outside, 'y.qcow2'), at('a/base.qcow2'));
      fs.symlinkSync(outside, at('b/elsewhere'));

      const scan = await new ImageIndex(root).scan();
      expect(backings(scan)).toEqual({
        'a/base.qcow2': undefined,
        'a/x.qcow2': at('a/base.qcow2'),
        'b/link.qcow2': at('b/base.qcow2'),
      });
      expect(scan).toMatchObject({ dirs: 3, reclaimSkipped: 1, unreadableDirs: [], headersRead: 3 });
      expect(scan.files.get(at('b/link.qcow2'))?.id).toEqual(scan.files.get(at('a/x.qcow2'))?.id);
    } finally {
      fs.rmSync(outside, { recursive: true, force: true });
    }
  });

  test('a listing without entry types (DT_UNKNOWN): stat decides, so subdirectories are walked and files read', async () => {
    await create(at('base.qcow2'));
    await create(at('d/x.qcow2'), '../base.qcow2');
    execFileSync('mkfifo', [at('d/pipe')]);
    jest
      .spyOn(fs, 'readdirSync')
      .mockImplementation(((p: PathLike, opts: { withFileTypes: true }) =>
        realReaddirSync(p, opts).map(unknownType)) as typeof fs.readdirSync);
    const scan = await new ImageIndex(root).scan();
    // As QEMU builds it: the image's directory and the name, `..` left to the kernel.
    expect(backings(scan)).toEqual({ 'base.qcow2': undefined, 'd/x.qcow2': `${at('d')}/../base.qcow2` });
    expect(scan.dirs).toBe(2);
  });

  test('a directory that cannot be listed is reported (its files are unseen); one gone or no longer a directory is not', async () => {
    await create(at('ok/v.qcow2'));
    for (const d of ['locked', 'gone', 'file']) fs.mkdirSync(at(d));
    const errors: Record<string, string> = { locked: 'EACCES', gone: 'ENOENT', file: 'ENOTDIR' };
    jest.spyOn(fs, 'readdirSync').mockImplementation(((p: PathLike, opts: { withFileTypes: true }) => {
      const code = errors[path.basename(String(p))];
      if (code) throw Object.assign(new Error(`${code}: ${String(p)}`), { code });
      return realReaddirSync(p, opts);
    }) as typeof fs.readdirSync);
    const scan = await new ImageIndex(root).scan();
    expect(scan.unreadableDirs).toEqual([{ path: at('locked'), error: `Error: EACCES: ${at('locked')}` }]);
    expect([...scan.files.keys()]).toEqual([at('ok/v.qcow2')]);
  });

  test('two directories whose inode numbers differ only beyond 2^53 (64-bit inodes) are both walked', async () => {
    await create(at('p/v.qcow2'));
    await create(at('q/w.qcow2'));
    const big: Record<string, bigint> = { [at('p')]: (1n << 60n) + 1n, [at('q')]: (1n << 60n) + 2n };
    jest.spyOn(fs, 'statSync').mockImplementation(((p: PathLike, opts?: StatSyncOptions) => {
      const st = (realStatSync as Stat)(p, opts);
      const ino = big[String(p)];
      if (ino === undefined || st === undefined) return st;
      const bigint = opts?.bigint === true;
      return Object.assign(Object.create(Object.getPrototypeOf(st) as object) as object, st, {
        ino: bigint ? ino : Number(ino),
      });
    }) as typeof fs.statSync);
    expect(Object.keys(backings(await new ImageIndex(root).scan())).sort()).toEqual(['p/v.qcow2', 'q/w.qcow2']);
  });

  test('the walk lets the event loop run once every 16 directories, not after each', async () => {
    for (let i = 0; i < 40; i++) fs.mkdirSync(at(`d${i}`));
    let listed = 0;
    jest.spyOn(fs, 'readdirSync').mockImplementation(((p: PathLike, opts: { withFileTypes: true }) => {
      listed++;
      return realReaddirSync(p, opts);
    }) as typeof fs.readdirSync);
    let listedAtFirstTurn = -1;
    setImmediate(() => (listedAtFirstTurn = listed));
    const scan = await new ImageIndex(root).scan();
    expect(scan.dirs).toBe(41);
    expect(listedAtFirstTurn).toBe(16);
  });

  test('its duration is reported', async () => {
    await create(at('v.qcow2'));
    const t0 = performance.now();
    const { ms } = await new ImageIndex(root).scan();
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(ms).toBeLessThanOrEqual(performance.now() - t0);
  });
});

describe('header reads', () => {
  test('an image deleted between the walk and its header read is dropped, not reported unreadable', async () => {
    await create(at('stays.qcow2'));
    await create(at('goes.qcow2'), 'stays.qcow2');
    jest.spyOn(qemuImg, 'readImageRefs').mockImplementation(async (p: string) => {
      if (p === at('goes.qcow2')) fs.rmSync(p);
      return realReadImageRefs(p);
    });
    const scan = await new ImageIndex(root).scan();
    expect([...scan.files.values()]).toEqual([{ path: at('stays.qcow2'), id: expect.anything() }]);
  });

  test('no more header reads in flight than headerConcurrency', async () => {
    for (let i = 0; i < 6; i++) await create(at(`v${i}.qcow2`));
    let inFlight = 0;
    let most = 0;
    jest.spyOn(qemuImg, 'readImageRefs').mockImplementation(async (p: string) => {
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, 20));
      inFlight--;
      return realReadImageRefs(p);
    });
    const scan = await new ImageIndex(root, { headerConcurrency: 2 }).scan();
    expect(scan.headersRead).toBe(6);
    expect(most).toBe(2);
  });
});

describe('the header cache', () => {
  const margin = { racyMarginMs: 0 };

  test('a file that is gone leaves the cache', async () => {
    await create(at('a.qcow2'));
    await create(at('b.qcow2'));
    const index = new ImageIndex(root, margin);
    await index.scan();
    expect(index.size).toBe(2);
    fs.rmSync(at('b.qcow2'));
    await index.scan();
    expect(index.size).toBe(1);
  });

  // A header rewritten while the stat reports the cached key with one field changed: that field
  // alone must make the header be read again. With the key unchanged, the cached header is used.
  const keyFields = ['ino', 'size', 'mtimeNs', 'ctimeNs', 'dev'] as const;
  test.each([...keyFields, 'none'] as const)('cache key field changed: %s', async (field) => {
    await create(at('old.qcow2'));
    await create(at('new.qcow2'));
    await create(at('v.qcow2'), 'old.qcow2');
    const index = new ImageIndex(root, margin);
    await index.scan();
    const cachedKey = realStatSync(at('v.qcow2'), { bigint: true });
    await rebase(at('v.qcow2'), 'new.qcow2');
    statAs(at('v.qcow2'), () => {
      const key: Partial<BigIntStats> = {};
      for (const f of keyFields) key[f] = f === field ? cachedKey[f] + 1n : cachedKey[f];
      return key;
    });
    const scan = await index.scan();
    if (field === 'none') {
      expect(scan.headersRead).toBe(0);
      expect(backingOf(scan.files.get(at('v.qcow2')))).toBe(at('old.qcow2'));
    } else {
      expect(scan.headersRead).toBe(1);
      expect(backingOf(scan.files.get(at('v.qcow2')))).toBe(at('new.qcow2'));
    }
  });

  test('racy rule: a header is cached only if both mtime and ctime are older than the margin', async () => {
    await create(at('v.qcow2'));
    const hourAgo = new Date(Date.now() - 3_600_000);
    const inAnHour = new Date(Date.now() + 3_600_000);
    const index = new ImageIndex(root); // 2 s margin
    // mtime an hour back, ctime now (utimes sets it): too new.
    fs.utimesSync(at('v.qcow2'), hourAgo, hourAgo);
    await index.scan();
    expect((await index.scan()).headersRead).toBe(1);
    // mtime an hour ahead, ctime old enough (no margin): too new.
    const noMargin = new ImageIndex(root, margin);
    fs.utimesSync(at('v.qcow2'), inAnHour, inAnHour);
    await new Promise((r) => setTimeout(r, 5));
    await noMargin.scan();
    expect((await noMargin.scan()).headersRead).toBe(1);
  });

  test('racy rule: a header whose newest time is exactly the margin old is not cached', async () => {
    await create(at('v.qcow2'));
    const now = Date.now();
    jest.spyOn(Date, 'now').mockReturnValue(now);
    const edge = BigInt(now) * 1_000_000n - 2_000_000_000n;
    statAs(at('v.qcow2'), () => ({ mtimeNs: edge, ctimeNs: edge }));
    const index = new ImageIndex(root, { racyMarginMs: 2_000 });
    await index.scan();
    expect(index.size).toBe(0);
    statAs(at('v.qcow2'), () => ({ mtimeNs: edge - 1n, ctimeNs: edge - 1n }));
    await index.scan();
    expect(index.size).toBe(1);
  });
});

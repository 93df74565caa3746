/**
 * The guard's walk of every process's fds (src/volume-users/proc-fds.ts), on a fake /proc of
 * symlinks to real files in a temp dir, and once on the real /proc. Where a case cannot be made
 * with symlinks (an fd closed between the listing and the readlink or stat, an fd whose inode
 * cannot be read, a path not resolvable from here), `fs.readlinkSync`/`statSync` are wrapped to
 * report it.
 */
import type * as nodeFs from 'node:fs';
import type { BigIntStats, PathLike, Stats, StatSyncOptions } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { walkFds } from '../../src/procfs/fd-walk';
import { fileIdOf } from '../../src/volume-users/file-id';
import { fdsOnFiles, type FdTarget, processName } from '../../src/volume-users/proc-fds';

// The module object proc-fds calls through (a spy on it is seen there).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fs = require('node:fs') as typeof nodeFs;
const realStatSync = fs.statSync;
const realReadlinkSync = fs.readlinkSync;

let dir: string;
let proc: string;
const at = (...p: string[]): string => path.join(dir, ...p);
const targetOf = (p: string): FdTarget => ({ path: p, id: fileIdOf(fs.statSync(p, { bigint: true })) });

/** /proc/<pid>: comm, and fd/<n> → target for each entry (fdinfo left empty). */
function fakeProcess(pid: number | string, fds: Record<number, string>): void {
  fs.mkdirSync(path.join(proc, String(pid), 'fd'), { recursive: true });
  fs.mkdirSync(path.join(proc, String(pid), 'fdinfo'), { recursive: true });
  fs.writeFileSync(path.join(proc, String(pid), 'comm'), `p${pid}\n`);
  for (const [fd, target] of Object.entries(fds)) {
    fs.symlinkSync(target, path.join(proc, String(pid), 'fd', fd));
    fs.writeFileSync(path.join(proc, String(pid), 'fdinfo', fd), 'pos:\t0\nflags:\t02\n');
  }
}

/** Every fd link seen, as `pid/fd link`, sorted. */
function walk(): { seen: string[]; stats: ReturnType<typeof walkFds> } {
  const seen: string[] = [];
  const stats = walkFds(proc, (pid, fd, link) => seen.push(`${pid}/${fd} ${link}`));
  return { seen: seen.sort(), stats: { ...stats, unreadablePids: [...stats.unreadablePids].sort() } };
}

beforeEach(() => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'proc-fds-')));
  proc = at('proc');
  fs.mkdirSync(proc);
  for (const f of ['v.qcow2', 'w.qcow2', 'other.qcow2']) fs.writeFileSync(at(f), '');
  fs.linkSync(at('w.qcow2'), at('w-link.qcow2'));
});
afterEach(() => {
  jest.restoreAllMocks();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('walkFds', () => {
  test('every fd of every pid; not entries that are no pid', () => {
    fakeProcess(101, { 0: 'pipe:[1]', 3: at('v.qcow2') });
    fakeProcess(102, { 4: 'socket:[7]' });
    for (const notPid of ['12abc', 'abc12', 'self1x']) fakeProcess(notPid, { 3: at('v.qcow2') });
    fs.mkdirSync(path.join(proc, 'net'));
    expect(walk()).toEqual({
      seen: [`101/0 pipe:[1]`, `101/3 ${at('v.qcow2')}`, '102/4 socket:[7]'],
      stats: { processes: 2, fds: 3, unreadablePids: [] },
    });
  });

  test('a process that exited is skipped; one whose fds cannot be listed or read is a blind spot', () => {
    fakeProcess(101, { 3: at('v.qcow2') });
    fs.mkdirSync(path.join(proc, '102')); // exited: no fd dir (ENOENT)
    fs.mkdirSync(path.join(proc, '103'));
    fs.writeFileSync(path.join(proc, '103', 'fd'), ''); // fd cannot be listed (ENOTDIR)
    fakeProcess(104, {});
    fs.writeFileSync(path.join(proc, '104', 'fd', '5'), ''); // not a link: readlink fails (EINVAL)
    expect(walk()).toEqual({
      seen: [`101/3 ${at('v.qcow2')}`],
      stats: { processes: 2, fds: 1, unreadablePids: [103, 104] },
    });
  });

  test('an fd closed between the listing and its readlink is skipped, not a blind spot', () => {
    fakeProcess(101, { 3: at('v.qcow2'), 4: at('w.qcow2') });
    const closed = path.join(proc, '101', 'fd', '3');
    jest.spyOn(fs, 'readlinkSync').mockImplementation(((p: PathLike, opts?: nodeFs.EncodingOption) => {
      if (String(p) === closed) throw Object.assign(new Error(`ENOENT: ${closed}`), { code: 'ENOENT' });
      return realReadlinkSync(p, opts);
    }) as typeof fs.readlinkSync);
    expect(walk()).toEqual({ seen: [`101/4 ${at('w.qcow2')}`], stats: { processes: 1, fds: 1, unreadablePids: [] } });
  });
});

describe('processName', () => {
  test('the comm of a pid; "?" for one that is gone', () => {
    expect(processName(process.pid)).toBe(fs.readFileSync('/proc/self/comm', 'utf8').trim());
    expect(processName(101, proc)).toBe('?');
    fakeProcess(101, {});
    expect(processName(101, proc)).toBe('p101');
  });
});

describe('fdsOnFiles', () => {
  test('on the real /proc: this process holding the file open', () => {
    const fd = fs.openSync(at('v.qcow2'), 'r');
    try {
      expect(fdsOnFiles([targetOf(at('v.qcow2'))]).fdsOnFile).toEqual([
        { target: 0, pid: process.pid, fd, path: at('v.qcow2'), sameName: true, locks: [] },
      ]);
    } finally {
      fs.closeSync(fd);
    }
  });

  test("only links ending in a target's basename are stat'ed, while no target has another name", () => {
    fakeProcess(101, {
      0: 'pipe:[1]',
      1: 'socket:[2]',
      3: at('v.qcow2'),
      4: at('other.qcow2'),
      5: `${at('v.qcow2')} (deleted)`,
      6: 'anon_inode:/v.qcow2',
    });
    const scan = fdsOnFiles([targetOf(at('v.qcow2'))], proc);
    expect(scan.fdsOnFile.map((f) => [f.pid, f.fd, f.path, f.sameName])).toEqual([[101, 3, at('v.qcow2'), true]]);
    expect(scan.statted).toBe(1);
  });

  test("a target with a hard link: every fd with a path is stat'ed, and an fd on the other name is found as not this name", () => {
    fakeProcess(101, {
      0: 'pipe:[1]',
      3: at('w-link.qcow2'),
      4: at('other.qcow2'),
      5: `${at('w.qcow2')} (deleted)`,
      6: at('v.qcow2'),
    });
    const scan = fdsOnFiles([targetOf(at('v.qcow2')), targetOf(at('w.qcow2'))], proc);
    expect(scan.fdsOnFile.map((f) => [f.target, f.fd, f.path, f.sameName]).sort()).toEqual([
      [0, 6, at('v.qcow2'), true],
      [1, 3, at('w-link.qcow2'), false],
    ]);
    expect(scan.statted).toBe(3);
  });

  test("no targets: no fd is stat'ed", () => {
    fakeProcess(101, { 3: at('v.qcow2'), 4: 'socket:[2]' });
    expect(fdsOnFiles([], proc)).toMatchObject({ fdsOnFile: [], statted: 0, fds: 2 });
  });

  describe("when the fd cannot be stat'ed", () => {
    /** statSync of every path under `fdPath` fails with `code`. */
    function statFails(fdPath: string, code: string): void {
      jest.spyOn(fs, 'statSync').mockImplementation(((p: PathLike, opts?: StatSyncOptions) => {
        if (String(p).startsWith(fdPath)) throw Object.assign(new Error(`${code}: ${fdPath}`), { code });
        return (realStatSync as (p: PathLike, o?: StatSyncOptions) => Stats | BigIntStats | undefined)(p, opts);
      }) as typeof fs.statSync);
    }

    test("closed meanwhile (ENOENT): not a use, even on the target's own path", () => {
      fakeProcess(101, { 3: at('v.qcow2') });
      statFails(path.join(proc, '101', 'fd', '3'), 'ENOENT');
      expect(fdsOnFiles([targetOf(at('v.qcow2'))], proc).fdsOnFile).toEqual([]);
    });

    test("any other error: its path decides, and the target's own path is a use", () => {
      fakeProcess(101, { 3: at('v.qcow2'), 4: at('w-link.qcow2') });
      statFails(path.join(proc, '101', 'fd'), 'EACCES');
      const found = fdsOnFiles([targetOf(at('v.qcow2')), targetOf(at('w.qcow2'))], proc).fdsOnFile;
      expect(found.map((f) => [f.target, f.fd, f.sameName])).toEqual([[0, 3, true]]);
    });
  });

  test('an fd on a volume with one name is a use of it, whatever file its path names here (another mount namespace)', () => {
    // The holder opened the volume as x/v.qcow2 in a mount namespace of its own; here that path is another file.
    fs.mkdirSync(at('x'));
    fs.writeFileSync(at('x/v.qcow2'), '');
    fakeProcess(101, { 3: at('x/v.qcow2') });
    const fdPath = path.join(proc, '101', 'fd', '3');
    jest
      .spyOn(fs, 'statSync')
      .mockImplementation(((p: PathLike, opts?: StatSyncOptions) =>
        (realStatSync as (p: PathLike, o?: StatSyncOptions) => Stats | BigIntStats | undefined)(
          String(p) === fdPath ? at('v.qcow2') : p,
          opts,
        )) as typeof fs.statSync);
    expect(fdsOnFiles([targetOf(at('v.qcow2'))], proc).fdsOnFile).toEqual([
      { target: 0, pid: 101, fd: 3, path: at('x/v.qcow2'), sameName: true, locks: [] },
    ]);
  });

  test('an fd on a hard-linked target by a path not resolvable here (another mount namespace) counts as its own name', () => {
    const elsewhere = '/nonexistent-mount-namespace/images/w.qcow2';
    fakeProcess(101, { 3: elsewhere });
    const fdPath = path.join(proc, '101', 'fd', '3');
    jest
      .spyOn(fs, 'statSync')
      .mockImplementation(((p: PathLike, opts?: StatSyncOptions) =>
        (realStatSync as (p: PathLike, o?: StatSyncOptions) => Stats | BigIntStats | undefined)(
          String(p) === fdPath ? at('w.qcow2') : p,
          opts,
        )) as typeof fs.statSync);
    expect(fdsOnFiles([targetOf(at('w.qcow2'))], proc).fdsOnFile).toEqual([
      { target: 0, pid: 101, fd: 3, path: elsewhere, sameName: true, locks: [] },
    ]);
  });
});

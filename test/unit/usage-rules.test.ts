/**
 * The guard's rules one by one, on the data the scans hand them (src/volume-users: who listens on a
 * QMP socket, which processes and images are users, how a user reads in a refusal), plus the real
 * /proc where a rule reads it.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { listenerPids, parseListeningInodes } from '../../src/drivers/qmp/qmp-pid';
import { CorruptImageHeaderError, type ImageRefs } from '../../src/storage/qemu-img';
import { dependants, MAX_NAME_DEPTH, type Target, unreadable } from '../../src/volume-users/dependants';
import { type FileId, fileIdOf, sameInode } from '../../src/volume-users/file-id';
import type { ImageRecord, IndexScan } from '../../src/volume-users/image-index';
import type { FdOnFile, FdScan } from '../../src/volume-users/proc-fds';
import type { LockEntry } from '../../src/volume-users/proc-locks';
import { processUsers } from '../../src/volume-users/process-users';
import { describeUser, VolumeUsage } from '../../src/volume-users/volume-users';
import { until } from '../harness/until';

let dir: string;
const at = (...p: string[]): string => path.join(dir, ...p);
beforeEach(() => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'usage-rules-')));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('sameInode', () => {
  test('the same inode number on another device is another file', () => {
    const id = (dev: bigint, ino: bigint): FileId => ({ dev, ino, nlink: 1n });
    expect(sameInode(id(1n, 5n), id(1n, 5n))).toBe(true);
    expect(sameInode(id(1n, 5n), id(2n, 5n))).toBe(false);
    expect(sameInode(id(1n, 5n), id(1n, 6n))).toBe(false);
  });
});

describe('the QMP socket listener', () => {
  test('/proc/net/unix as the kernel pads it: a short inode number, a path with a space', () => {
    const text = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '0000000000000000: 00000002 00000000 00010000 0001 01   811 /run/lm/vm 1/qmp.sock',
      '0000000000000001: 00000002 00000000 00010000 0001 01 18772 /run/lm/vm',
    ].join('\n');
    expect(parseListeningInodes(text, '/run/lm/vm 1/qmp.sock')).toEqual(['811']);
  });

  test("a name that differs from the VM's socket only by white space is another socket", () => {
    const sock = '/run/lm/vm1/qmp.sock';
    const line = (inode: number, name: string, flags = '00010000'): string =>
      `00000000ee2de64d: 00000002 00000000 ${flags} 0001 01 ${String(inode).padStart(5)} ${name}`;
    const text = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      line(101, `${sock} `),
      line(102, `${sock}\t`),
      line(103, `${sock}\r`),
      line(104, ` ${sock}`),
      line(105, sock, '00000000'), // bound there, not listening: a client's socket
      ` ${line(106, sock)}`, // not a line as the kernel prints it
      line(107, ''),
      line(128_770, sock),
    ].join('\n');
    expect(parseListeningInodes(text, sock)).toEqual(['128770']);
  });

  test('on the real /proc: this process, listening on a unix socket', async () => {
    const sock = at('qmp.sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    try {
      expect(listenerPids(sock)).toEqual([process.pid]);
      expect(listenerPids(at('other.sock'))).toEqual([]);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  test('several holders of the socket, in pid order', () => {
    const proc = at('proc');
    fs.mkdirSync(path.join(proc, 'net'), { recursive: true });
    fs.writeFileSync(
      path.join(proc, 'net', 'unix'),
      'Num RefCount Protocol Flags Type St Inode Path\n0: 00000002 00000000 00010000 0001 01 5551 /run/q.sock\n',
    );
    for (const pid of [300, 20, 4000, 7, 55]) {
      fs.mkdirSync(path.join(proc, String(pid), 'fd'), { recursive: true });
      fs.symlinkSync('socket:[5551]', path.join(proc, String(pid), 'fd', '3'));
    }
    expect(listenerPids('/run/q.sock', proc)).toEqual([7, 20, 55, 300, 4000]);
  });
});

describe('processUsers', () => {
  const lock = (pid: number | null, end: bigint | null = 101n): LockEntry => ({
    kind: pid === null ? 'OFDLCK' : 'POSIX',
    access: 'READ',
    pid,
    major: 254,
    minor: 0,
    ino: 42n,
    start: 100n,
    end,
  });
  const fd = (pid: number, locks: LockEntry[] = [], sameName = true): FdOnFile => ({
    target: 0,
    pid,
    fd: 3,
    path: '/s/v.qcow2',
    sameName,
    locks,
  });
  const scan = (fdsOnFile: FdOnFile[]): FdScan => ({ processes: 1, fds: 1, unreadablePids: [], statted: 1, fdsOnFile });

  test('openBy in pid order; lockedBy only for a process whose fd carries locks', () => {
    const users = processUsers(scan([fd(300), fd(20, [lock(null)])]), 0, [], new Set(), dir);
    expect(users).toEqual([
      { kind: 'openBy', pid: 20, process: '?', paths: ['/s/v.qcow2'] },
      { kind: 'lockedBy', pid: 20, process: '?', locks: ['OFDLCK READ 100-101'] },
      { kind: 'openBy', pid: 300, process: '?', paths: ['/s/v.qcow2'] },
    ]);
  });

  test('locks with no holder in sight: each is a user but those the kernel names an expected pid for', () => {
    const users = processUsers(scan([]), 0, [lock(null, null), lock(77), lock(88)], new Set([77]), dir);
    expect(users).toEqual([
      { kind: 'lockedBy', pid: null, locks: ['OFDLCK READ 100-EOF'] },
      { kind: 'lockedBy', pid: 88, locks: ['POSIX READ 100-101'] },
    ]);
  });
});

describe('dependants and unreadable files', () => {
  const id = (ino: bigint, nlink = 1n): FileId => ({ dev: 1n, ino, nlink });
  const scanOf = (records: ImageRecord[]): IndexScan => ({
    files: new Map(records.map((r) => [r.path, r])),
    unreadableDirs: [{ path: '/s/locked', error: 'EACCES' }],
    dirs: 1,
    headersRead: 0,
    reclaimSkipped: 0,
    ms: 0,
  });

  test('a backing name on a hard-linked volume that can no longer be resolved counts as its name', async () => {
    const t: Target = { path: at('v.qcow2'), id: id(9n, 2n) };
    // The walk saw the backing file (same inode as the volume); it is gone when its name is compared.
    const scan = scanOf([
      { path: at('gone.qcow2'), id: id(9n, 2n) },
      { path: at('child.qcow2'), id: id(10n), refs: { backing: at('gone.qcow2') } },
    ]);
    expect(await dependants(t, new Set(), { scan, statOf: () => undefined, mounts: () => [] })).toEqual([
      { kind: 'backingOf', image: at('child.qcow2') },
    ]);
  });

  describe('names followed as QEMU follows them', () => {
    const t: Target = { path: '/s/v.qcow2', id: id(1n) };
    /** Files outside the walk: their names, or the error reading them. */
    const outside = (names: Record<string, ImageRefs | Error | undefined>) => ({
      statOf: (p: string): FileId | undefined => (p === '/s/v.qcow2' ? id(1n) : undefined),
      mounts: () => [],
      refsOf: async (p: string): Promise<ImageRefs | undefined> => {
        const r = names[p];
        if (r instanceof Error) throw r;
        return r;
      },
    });
    const errno = (code: string): Error => Object.assign(new Error(code), { code });

    test('a data file, and a chain through files outside the walk, name the volume', async () => {
      const scan = scanOf([
        { path: '/s/d.qcow2', id: id(2n), refs: { dataFile: '/s/v.qcow2' } },
        { path: '/s/c.qcow2', id: id(3n), refs: { backing: '/o/b1.qcow2' } },
      ]);
      const ctx = {
        scan,
        ...outside({ '/o/b1.qcow2': { backing: '../o2/b2.qcow2' }, '/o/../o2/b2.qcow2': { backing: '/s/v.qcow2' } }),
      };
      expect(await dependants(t, new Set(), ctx)).toEqual([
        { kind: 'backingOf', image: '/s/c.qcow2', through: ['/o/b1.qcow2', '/o/../o2/b2.qcow2'] },
        { kind: 'dataFileOf', image: '/s/d.qcow2' },
      ]);
    });

    test('a file outside the walk is followed only as far as the name it was opened by says (followsBacking)', async () => {
      const spec = 'json:{"driver":"qcow2","file":{"driver":"file","filename":"/o/b.qcow2"},"backing":null}';
      const scan = scanOf([{ path: '/s/c.qcow2', id: id(3n), refs: { backing: spec } }]);
      expect(await dependants(t, new Set(), { scan, ...outside({ '/o/b.qcow2': { backing: '/s/v.qcow2' } }) })).toEqual(
        [],
      );
      const data = 'json:{"driver":"qcow2","file":{"driver":"file","filename":"/o/b.qcow2"},"data-file":null}';
      const scan2 = scanOf([{ path: '/s/c.qcow2', id: id(3n), refs: { backing: data } }]);
      expect(
        await dependants(t, new Set(), { scan: scan2, ...outside({ '/o/b.qcow2': { dataFile: '/s/v.qcow2' } }) }),
      ).toEqual([]);
      expect(
        await dependants(t, new Set(), { scan: scan2, ...outside({ '/o/b.qcow2': { backing: '/s/v.qcow2' } }) }),
      ).toEqual([{ kind: 'backingOf', image: '/s/c.qcow2', through: ['/o/b.qcow2'] }]);
    });

    test('a name that cannot be tied to a file, an opaque image, a chain too deep: unresolvedName, each with its why', async () => {
      const deep: Record<string, ImageRefs> = {};
      for (let i = 0; i < MAX_NAME_DEPTH + 2; i++) deep[`/o/l${i}`] = { backing: `/o/l${i + 1}` };
      const scan = scanOf([
        { path: '/s/n.qcow2', id: id(2n), refs: { backing: 'nbd://h/e' } },
        { path: '/s/m.vmdk', id: id(3n), refs: { opaque: 'a VMDK image' } },
        { path: '/s/r.qcow2', id: id(4n), refs: { dataFile: 'rel.raw' } },
        { path: '/s/z.qcow2', id: id(5n), refs: { backing: '/o/l0' } },
      ]);
      expect(await dependants(t, new Set(), { scan, ...outside(deep) })).toEqual([
        { kind: 'unresolvedName', image: '/s/m.vmdk', why: '/s/m.vmdk is a VMDK image' },
        {
          kind: 'unresolvedName',
          image: '/s/n.qcow2',
          why: `its backing name "nbd://h/e" is opened by QEMU's nbd protocol, not as a file of this host`,
        },
        {
          kind: 'unresolvedName',
          image: '/s/r.qcow2',
          why: 'its data file name "rel.raw" is relative to the working directory of whichever process opens the image',
        },
        {
          kind: 'unresolvedName',
          image: '/s/z.qcow2',
          why: `its names lead through more than ${MAX_NAME_DEPTH} files`,
        },
      ]);
    });

    test(`a chain through ${MAX_NAME_DEPTH - 1} files outside the walk is followed to its end; one more file is refused`, async () => {
      const chain = (files: number): Record<string, ImageRefs> => {
        const names: Record<string, ImageRefs> = {};
        for (let i = 0; i < files; i++)
          names[`/o/l${i}`] = { backing: i === files - 1 ? '/s/v.qcow2' : `/o/l${i + 1}` };
        return names;
      };
      const scan = scanOf([{ path: '/s/z.qcow2', id: id(5n), refs: { backing: '/o/l0' } }]);
      const longest = await dependants(t, new Set(), { scan, ...outside(chain(MAX_NAME_DEPTH - 1)) });
      expect(longest).toEqual([
        {
          kind: 'backingOf',
          image: '/s/z.qcow2',
          through: Array.from({ length: MAX_NAME_DEPTH - 1 }, (_, i) => `/o/l${i}`),
        },
      ]);
      expect(await dependants(t, new Set(), { scan, ...outside(chain(MAX_NAME_DEPTH)) })).toEqual([
        {
          kind: 'unresolvedName',
          image: '/s/z.qcow2',
          why: `its names lead through more than ${MAX_NAME_DEPTH} files`,
        },
      ]);
    });

    test('a file outside the walk that is gone is opened by no one; one that cannot be read might name the volume', async () => {
      const scan = scanOf([
        { path: '/s/a.qcow2', id: id(2n), refs: { backing: '/o/gone' } },
        { path: '/s/b.qcow2', id: id(3n), refs: { backing: '/o/notdir/x' } },
        { path: '/s/c.qcow2', id: id(4n), refs: { backing: '/o/loop' } },
        { path: '/s/d.qcow2', id: id(5n), refs: { backing: '/o/denied' } },
        { path: '/s/e.qcow2', id: id(6n), refs: { backing: '/o/corrupt' } },
      ]);
      const ctx = {
        scan,
        ...outside({
          '/o/gone': errno('ENOENT'),
          '/o/notdir/x': errno('ENOTDIR'),
          '/o/loop': errno('ELOOP'),
          '/o/denied': errno('EACCES'),
          '/o/corrupt': new CorruptImageHeaderError('/o/corrupt', 'bad'),
        }),
      };
      expect(await dependants(t, new Set(), ctx)).toEqual([
        { kind: 'unreadable', path: '/o/corrupt', error: '/o/corrupt: corrupt image header: bad' },
        { kind: 'unreadable', path: '/o/denied', error: 'Error: EACCES' },
      ]);
    });

    test('a walked image reached by another string from its own directory is judged alone; from another directory it is followed', async () => {
      fs.mkdirSync(at('real'));
      fs.mkdirSync(at('other'));
      fs.writeFileSync(at('real', 'b.qcow2'), '');
      fs.symlinkSync(at('real'), at('link'));
      fs.symlinkSync(at('real', 'b.qcow2'), at('other', 'b-link.qcow2'));
      const bId = fileIdOf(fs.statSync(at('real', 'b.qcow2'), { bigint: true }));
      const scan = scanOf([
        { path: at('real', 'b.qcow2'), id: bId, refs: { backing: 'v.qcow2' } },
        { path: at('c.qcow2'), id: id(3n), refs: { backing: at('link', 'b.qcow2') } },
        { path: at('d.qcow2'), id: id(4n), refs: { backing: at('other', 'b-link.qcow2') } },
      ]);
      const target: Target = { path: at('other', 'v.qcow2'), id: undefined };
      const statOf = (p: string): FileId | undefined => {
        try {
          return fileIdOf(fs.statSync(p, { bigint: true }));
        } catch {
          return undefined;
        }
      };
      const read: string[] = [];
      const refsOf = async (p: string): Promise<ImageRefs | undefined> => {
        read.push(p);
        return p === at('other', 'b-link.qcow2') ? { backing: 'v.qcow2' } : undefined;
      };
      // c names b through a directory symlink: b's v.qcow2 is real/v.qcow2, as for b itself; d names b
      // through a file symlink in other/: QEMU resolves b's v.qcow2 there, which is the target.
      expect(await dependants(target, new Set(), { scan, statOf, mounts: () => [], refsOf })).toEqual([
        { kind: 'backingOf', image: at('d.qcow2'), through: [at('other', 'b-link.qcow2')] },
      ]);
      expect(read).toContain(at('other', 'b-link.qcow2'));
      expect(read).not.toContain(at('link', 'b.qcow2'));
    });
  });

  test('unreadable: the directories, and the files other than the volume and the expected images', () => {
    const t: Target = { path: '/s/v.qcow2', id: id(1n) };
    const scan = scanOf([
      { path: '/s/v.qcow2', id: id(1n), unreadable: 'corrupt' },
      { path: '/s/top.qcow2', id: id(2n), unreadable: 'corrupt' },
      { path: '/s/x.qcow2', id: id(3n), unreadable: 'EIO' },
      { path: '/s/ok.qcow2', id: id(4n), refs: { backing: '/s/v.qcow2' } },
    ]);
    expect(unreadable(scan, t, new Set(['/s/top.qcow2']))).toEqual([
      { kind: 'unreadable', path: '/s/locked', error: 'EACCES' },
      { kind: 'unreadable', path: '/s/x.qcow2', error: 'EIO' },
    ]);
  });
});

describe('describeUser', () => {
  test('each kind of user as a refusal states it', () => {
    expect(describeUser({ kind: 'backingOf', image: '/s/c.qcow2' })).toBe('it is the backing file of /s/c.qcow2');
    expect(describeUser({ kind: 'openBy', pid: 7, process: 'qemu-io', paths: ['/s/v'] })).toBe(
      'process 7 (qemu-io) has it open',
    );
    expect(describeUser({ kind: 'lockedBy', pid: null, locks: ['OFDLCK READ 100-101', 'OFDLCK READ 201-201'] })).toBe(
      'a process not visible here holds locks on it (OFDLCK READ 100-101, OFDLCK READ 201-201)',
    );
    expect(
      describeUser({ kind: 'lockedBy', pid: 8, process: 'qemu', locks: ['OFDLCK READ 100-101', 'POSIX WRITE 0-EOF'] }),
    ).toBe('process 8 (qemu) holds locks on it (OFDLCK READ 100-101, POSIX WRITE 0-EOF)');
    expect(describeUser({ kind: 'lockedBy', pid: 8, locks: ['POSIX WRITE 0-EOF'] })).toBe(
      'process 8 holds locks on it (POSIX WRITE 0-EOF)',
    );
    expect(describeUser({ kind: 'unreadable', path: '/s/x', error: 'EIO' })).toBe(
      '/s/x could not be read (EIO), so it may use it',
    );
  });
});

describe('VolumeUsage', () => {
  test('no process walk for a volume that does not exist; the phases add up', async () => {
    const guard = new VolumeUsage(dir);
    try {
      const { results, stats } = await guard.findUsersOfEach([{ volume: at('none.qcow2') }]);
      expect(results).toEqual([{ volume: at('none.qcow2'), exists: false, users: [] }]);
      expect(stats).toMatchObject({ processes: 0, fds: 0 });
      expect(stats.indexMs).toBeGreaterThanOrEqual(0);
      expect(stats.indexMs + stats.procMs).toBeLessThanOrEqual(stats.totalMs);
    } finally {
      guard.close();
    }
  });

  test('close() closes its fd on /proc/locks', async () => {
    const proc = at('proc');
    fs.mkdirSync(path.join(proc, 'net'), { recursive: true });
    fs.writeFileSync(path.join(proc, 'locks'), '');
    fs.writeFileSync(path.join(proc, 'net', 'unix'), '');
    fs.writeFileSync(at('v.qcow2'), '');
    const heldOn = (): number =>
      fs.readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${fd}`) === path.join(proc, 'locks');
        } catch {
          return false;
        }
      }).length;
    const guard = new VolumeUsage(at('images'), { procRoot: proc });
    fs.mkdirSync(at('images'));
    expect((await guard.findUsers({ volume: at('v.qcow2') })).exists).toBe(true);
    expect(heldOn()).toBe(1);
    guard.close();
    // The fd is closed on the thread pool, after close() returns: a fixed 50 ms wait was not
    // always enough on a loaded machine. Wait for it to be closed; it never is if close() leaks it.
    await until(async () => heldOn() === 0, 10_000);
    expect(heldOn()).toBe(0);
  });
});

/**
 * The host-wide "who else uses this volume" guard, on real qcow2 images made by qemu-img in a temp
 * dir, and on a fake /proc tree (procRoot) for the process side's rules. Real processes and QEMU:
 * test/qemu/volume-users.test.ts.
 */
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { listenerPids, parseListeningInodes } from '../../src/drivers/qmp/qmp-pid';
import { reclaimPath } from '../../src/storage/reclaim';
import {
  canonicalName,
  devMajorMinor,
  isReclaimName,
  locksOn,
  parseLockLine,
  parseMountinfo,
  parseProcLocks,
  VolumeUsage,
  type VolumeUser,
} from '../../src/volume-users';

const run = promisify(execFile);
let root: string;
const at = (...p: string[]): string => path.join(root, ...p);
const create = (file: string, backing?: string): Promise<unknown> => {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  return run('qemu-img', [
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
const backingOf = (...images: string[]): VolumeUser[] => images.map((image) => ({ kind: 'backingOf', image }));

function hashTree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.set(p, createHash('sha256').update(fs.readFileSync(p)).digest('hex'));
    }
  };
  walk(dir);
  return out;
}

describe('parsing /proc', () => {
  test('an OFD lock line: pid -1 becomes null, hex device, EOF end', () => {
    expect(parseLockLine('1: OFDLCK ADVISORY  READ -1 fe:00:9977906 100 101')).toEqual({
      kind: 'OFDLCK',
      access: 'READ',
      pid: null,
      major: 254,
      minor: 0,
      ino: 9977906n,
      start: 100n,
      end: 101n,
    });
    expect(parseLockLine('2: POSIX  ADVISORY  WRITE 2569 08:1a:10035213 0 EOF')).toEqual({
      kind: 'POSIX',
      access: 'WRITE',
      pid: 2569,
      major: 8,
      minor: 26,
      ino: 10035213n,
      start: 0n,
      end: null,
    });
  });
  test('fdinfo lock lines and blocked waiters parse alike; garbage is no lock', () => {
    expect(parseLockLine('lock:\t1: OFDLCK ADVISORY  READ -1 fe:00:42 203 203')?.ino).toBe(42n);
    expect(parseLockLine('3: -> OFDLCK ADVISORY  WRITE -1 fe:00:42 100 100')?.access).toBe('WRITE');
    expect(parseProcLocks('pos:\t0\nflags:\t02\nmnt_id:\t27\nino:\t42\n\nnot a lock 1 2 3')).toEqual([]);
  });
  test('a device number splits into the major:minor that /proc/locks prints', () => {
    expect(devMajorMinor(0xfe00n)).toEqual({ major: 254, minor: 0 });
    // glibc makedev(8, 300): minor bits above 8 move up 12 bits
    expect(devMajorMinor((8n << 8n) | (300n & 0xffn) | ((300n & ~0xffn) << 12n))).toEqual({ major: 8, minor: 300 });
    const file = path.join(os.tmpdir(), `vu-dev-${process.pid}`);
    fs.writeFileSync(file, '');
    try {
      const st = fs.statSync(file, { bigint: true });
      const { major, minor } = devMajorMinor(st.dev);
      const line = `1: OFDLCK ADVISORY  READ -1 ${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino} 100 101`;
      expect(
        locksOn(parseProcLocks(`${line}\n2: OFDLCK ADVISORY  READ -1 00:01:${st.ino} 100 101`), {
          dev: st.dev,
          ino: st.ino,
          nlink: 1n,
        }),
      ).toHaveLength(1);
    } finally {
      fs.rmSync(file);
    }
  });
  test('/proc/net/unix: only a listening socket bound at exactly that path', () => {
    const text = [
      'Num       RefCount Protocol Flags    Type St Inode Path',
      '00000000f7f7ade0: 00000002 00000000 00010000 0001 01 18770 /run/lm/vm1/qmp.sock',
      '00000000f7f7ade1: 00000003 00000000 00000000 0001 03 18771 /run/lm/vm1/qmp.sock',
      '00000000f7f7ade2: 00000002 00000000 00010000 0001 01 18772 /run/lm/vm10/qmp.sock',
      '00000000f7f7ade3: 00000002 00000000 00010000 0001 01 18773',
    ].join('\n');
    expect(parseListeningInodes(text, '/run/lm/vm1/qmp.sock')).toEqual(['18770']);
  });
  test('mountinfo: a bind mount of a directory maps back to the file system path', () => {
    const mounts = parseMountinfo(
      [
        '22 1 254:0 / / rw,relatime - ext4 /dev/vda1 rw',
        '40 22 254:0 /srv/storage /mnt/bind\\040root rw,relatime - ext4 /dev/vda1 rw',
      ].join('\n'),
    );
    expect(mounts[1]).toEqual({ majorMinor: '254:0', root: '/srv/storage', mountPoint: '/mnt/bind root' });
    // canonicalName needs an existing path: / itself is on the root mount
    expect(canonicalName('/', mounts)).toBe('254:0:/');
  });
  test('reclaim names are exactly those reclaim.ts gives', () => {
    expect(isReclaimName(path.basename(reclaimPath('/r/images/d/v1.qcow2')))).toBe(true);
    expect(isReclaimName('v1.qcow2.reclaim')).toBe(false);
    expect(isReclaimName('.v1.raw.reclaim')).toBe(false);
    expect(isReclaimName('.v1.qcow2')).toBe(false);
  });
});

describe('images under the whole storage root', () => {
  beforeEach(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'vu-unit-'));
    await create(at('images/d1/base.qcow2'));
    await create(at('images/d1/mid.qcow2'), 'base.qcow2'); // relative
    await create(at('images/d1/top.qcow2'), 'mid.qcow2');
    await create(at('images/d2/clone.qcow2'), at('images/d1/base.qcow2')); // absolute, another disk
    await create(at('other/deep/x/clone.img'), '../../../images/d1/mid.qcow2'); // any depth, any name
    // A deleted volume waiting for its unlink still names base: not a user.
    await create(at('images/d1/old.qcow2'), 'base.qcow2');
    fs.renameSync(at('images/d1/old.qcow2'), reclaimPath(at('images/d1/old.qcow2')));
    // A hard link of base under another name, and an image backed by that name only.
    fs.mkdirSync(at('images/d3'));
    fs.linkSync(at('images/d1/base.qcow2'), at('images/d3/hard.qcow2'));
    await create(at('images/d3/on-hard.qcow2'), 'hard.qcow2');
    // A backing name through a symlinked directory reaches base's own name.
    fs.symlinkSync(at('images/d1'), at('alias'));
    await create(at('images/d4/via-link.qcow2'), at('alias/base.qcow2'));
    // Not images, and a fifo that must not be opened (it would block).
    fs.writeFileSync(at('images/d1/.v0.merged.json'), '{}');
    await run('qemu-img', ['create', '-q', '-f', 'raw', at('images/d1/raw.img'), '1M']);
    execFileSync('mkfifo', [at('images/d1/pipe')]);
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  test('every image naming the volume, by absolute or relative path, anywhere; not the expected ones, not a hard link, not a reclaim name', async () => {
    const before = hashTree(root);
    const guard = new VolumeUsage(root);
    const [base, mid, top, hard] = (
      await guard.findUsersOfEach([
        { volume: at('images/d1/base.qcow2'), expectedImages: [at('images/d1/mid.qcow2')] },
        { volume: at('images/d1/mid.qcow2'), expectedImages: [at('images/d1/top.qcow2')] },
        { volume: at('images/d1/top.qcow2') },
        { volume: at('images/d3/hard.qcow2') },
      ])
    ).results;
    expect(base.users).toEqual(backingOf(at('images/d2/clone.qcow2'), at('images/d4/via-link.qcow2')));
    expect(mid.users).toEqual(backingOf(at('other/deep/x/clone.img')));
    expect(top).toEqual({ volume: at('images/d1/top.qcow2'), exists: true, users: [] });
    expect(hard.users).toEqual(backingOf(at('images/d3/on-hard.qcow2')));
    // Without expected images, the chain's own layer is a user like any other.
    expect((await guard.findUsers({ volume: at('images/d1/mid.qcow2') })).users).toEqual(
      backingOf(at('images/d1/top.qcow2'), at('other/deep/x/clone.img')),
    );
    expect(hashTree(root)).toEqual(before);
  });

  test("imagesNaming: the images alone, every one naming the volume (the chain's own layer too); the tree untouched", async () => {
    const before = hashTree(root);
    const guard = new VolumeUsage(root);
    expect(await guard.imagesNaming(at('images/d1/mid.qcow2'))).toEqual(
      backingOf(at('images/d1/top.qcow2'), at('other/deep/x/clone.img')),
    );
    expect(await guard.imagesNaming(at('alias/base.qcow2'))).toEqual(
      backingOf(at('images/d1/mid.qcow2'), at('images/d2/clone.qcow2'), at('images/d4/via-link.qcow2')),
    );
    expect(await guard.imagesNaming(at('images/d1/top.qcow2'))).toEqual([]);
    expect(hashTree(root)).toEqual(before);
  });

  test('a volume that is gone is still found named by an image; a new image is seen at once', async () => {
    const guard = new VolumeUsage(root);
    expect(await guard.findUsers({ volume: at('images/d5/gone.qcow2') })).toEqual({
      volume: at('images/d5/gone.qcow2'),
      exists: false,
      users: [],
    });
    await create(at('images/d5/child.qcow2'), 'gone.qcow2');
    expect((await guard.findUsers({ volume: at('images/d5/gone.qcow2') })).users).toEqual(
      backingOf(at('images/d5/child.qcow2')),
    );
  });

  test('an image backed by a file that is missing is no user of a volume that exists', async () => {
    await create(at('images/d7/orphan.qcow2'), '/nowhere/gone.qcow2');
    expect((await new VolumeUsage(root).findUsers({ volume: at('images/d1/top.qcow2') })).users).toEqual([]);
  });

  test('a cached header rewritten by qemu-img rebase -u is read again', async () => {
    const guard = new VolumeUsage(root, { index: { racyMarginMs: 0 } });
    const query = { volume: at('images/d1/base.qcow2'), expectedImages: [at('images/d1/mid.qcow2')] };
    await guard.findUsers(query);
    const warm = await guard.findUsersOfEach([query]);
    expect(warm.stats.headersRead).toBe(0); // every header from the index
    await rebase(at('images/d1/top.qcow2'), 'base.qcow2');
    const after = await guard.findUsersOfEach([query]);
    expect(after.stats.headersRead).toBe(1);
    expect(after.results[0].users).toEqual(
      backingOf(at('images/d1/top.qcow2'), at('images/d2/clone.qcow2'), at('images/d4/via-link.qcow2')),
    );
  });

  test('a same-size header rewrite with its mtime set back is still seen (ctime moves)', async () => {
    const guard = new VolumeUsage(root, { index: { racyMarginMs: 0 } });
    const top = at('images/d1/top.qcow2');
    await guard.findUsers({ volume: at('images/d1/base.qcow2') });
    const st = fs.statSync(top);
    // "mid.qcow2" becomes "bas.qcow2" (same length) in place, then the mtime is put back.
    const bytes = fs.readFileSync(top);
    const offset = Number(bytes.readBigUInt64BE(8));
    await create(at('images/d1/bas.qcow2'));
    fs.writeFileSync(
      top,
      Buffer.concat([bytes.subarray(0, offset), Buffer.from('bas.qcow2'), bytes.subarray(offset + 9)]),
    );
    fs.utimesSync(top, st.atime, st.mtime);
    expect(fs.statSync(top).size).toBe(st.size);
    expect((await guard.findUsers({ volume: at('images/d1/bas.qcow2') })).users).toEqual(backingOf(top));
  });

  test('a header written just now is not kept in the index (racy rule)', async () => {
    // A margin no set-up outlasts: with the default 2 s, a slow beforeEach on a loaded machine
    // left its first image older than the margin, cached, and the test failing now and then.
    const guard = new VolumeUsage(root, { index: { racyMarginMs: 600_000 } });
    await guard.findUsers({ volume: at('images/d1/base.qcow2') });
    const again = await guard.findUsersOfEach([{ volume: at('images/d1/base.qcow2') }]);
    expect(again.stats.headersRead).toBe(again.stats.images);
  });

  test('an image whose header cannot be read is reported: it might name the volume', async () => {
    const bad = at('images/d6/bad.qcow2');
    await create(bad, 'base.qcow2');
    const fd = fs.openSync(bad, 'r+');
    const offset = Buffer.alloc(8);
    offset.writeBigUInt64BE(1n << 40n);
    fs.writeSync(fd, offset, 0, 8, 8);
    fs.closeSync(fd);
    const { users } = await new VolumeUsage(root).findUsers({ volume: at('images/d1/top.qcow2') });
    expect(users).toEqual([{ kind: 'unreadable', path: bad, error: expect.stringContaining('corrupt image header') }]);
  });
});

describe('processes, on a fake /proc', () => {
  let proc: string;
  const PID_OPEN = 101;
  const PID_HARD = 102;
  const ofd = (ino: bigint, dev: bigint): string => {
    const { major, minor } = devMajorMinor(dev);
    return `OFDLCK ADVISORY  READ -1 ${major.toString(16)}:${minor.toString(16)}:${ino} 100 101`;
  };
  function fakeProcess(
    pid: number,
    comm: string,
    fds: Record<number, string>,
    fdinfo: Record<number, string> = {},
  ): void {
    fs.mkdirSync(path.join(proc, String(pid), 'fd'), { recursive: true });
    fs.mkdirSync(path.join(proc, String(pid), 'fdinfo'), { recursive: true });
    fs.writeFileSync(path.join(proc, String(pid), 'comm'), `${comm}\n`);
    for (const [fd, target] of Object.entries(fds)) {
      fs.symlinkSync(target, path.join(proc, String(pid), 'fd', fd));
      fs.writeFileSync(path.join(proc, String(pid), 'fdinfo', fd), `pos:\t0\nflags:\t02\n${fdinfo[Number(fd)] ?? ''}`);
    }
  }
  beforeEach(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'vu-proc-'));
    proc = path.join(root, 'proc');
    fs.mkdirSync(path.join(proc, 'net'), { recursive: true });
    fs.writeFileSync(path.join(proc, 'net', 'unix'), 'Num       RefCount Protocol Flags    Type St Inode Path\n');
    await create(at('images/d1/v.qcow2'));
    await create(at('images/d1/w.qcow2'));
    fs.linkSync(at('images/d1/w.qcow2'), at('images/d1/w-link.qcow2'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  test('an fd on the name is openBy (and lockedBy with its fdinfo locks); an fd on a hard link is nothing; expected pids are left out', async () => {
    const v = fs.statSync(at('images/d1/v.qcow2'), { bigint: true });
    const w = fs.statSync(at('images/d1/w.qcow2'), { bigint: true });
    fakeProcess(
      PID_OPEN,
      'qemu-system-x86',
      { 0: 'pipe:[1]', 7: at('images/d1/v.qcow2') },
      { 7: `lock:\t1: ${ofd(v.ino, v.dev)}\n` },
    );
    fakeProcess(PID_HARD, 'qemu-io', { 3: at('images/d1/w-link.qcow2') }, { 3: `lock:\t1: ${ofd(w.ino, w.dev)}\n` });
    fs.writeFileSync(path.join(proc, 'locks'), `1: ${ofd(v.ino, v.dev)}\n2: ${ofd(w.ino, w.dev)}\n`);
    const guard = new VolumeUsage(root, { procRoot: proc });
    const [vu, wu, linku] = (
      await guard.findUsersOfEach([
        { volume: at('images/d1/v.qcow2') },
        { volume: at('images/d1/w.qcow2') },
        { volume: at('images/d1/w-link.qcow2') },
      ])
    ).results;
    expect(vu.users).toEqual([
      { kind: 'openBy', pid: PID_OPEN, process: 'qemu-system-x86', paths: [at('images/d1/v.qcow2')] },
      { kind: 'lockedBy', pid: PID_OPEN, process: 'qemu-system-x86', locks: ['OFDLCK READ 100-101'] },
    ]);
    expect(wu.users).toEqual([]); // held, locked, but only by its other name
    expect(linku.users).toEqual([
      { kind: 'openBy', pid: PID_HARD, process: 'qemu-io', paths: [at('images/d1/w-link.qcow2')] },
      { kind: 'lockedBy', pid: PID_HARD, process: 'qemu-io', locks: ['OFDLCK READ 100-101'] },
    ]);
    expect((await guard.findUsers({ volume: at('images/d1/v.qcow2'), expectedPids: [PID_OPEN] })).users).toEqual([]);
  });

  test('imagesNaming does not look at processes: a volume held open and locked has no image naming it', async () => {
    const v = fs.statSync(at('images/d1/v.qcow2'), { bigint: true });
    fakeProcess(PID_OPEN, 'qemu-system-x86', { 7: at('images/d1/v.qcow2') }, { 7: `lock:\t1: ${ofd(v.ino, v.dev)}\n` });
    fs.writeFileSync(path.join(proc, 'locks'), `1: ${ofd(v.ino, v.dev)}\n`);
    const guard = new VolumeUsage(root, { procRoot: proc });
    expect((await guard.findUsers({ volume: at('images/d1/v.qcow2') })).users).toHaveLength(2);
    expect(await guard.imagesNaming(at('images/d1/v.qcow2'))).toEqual([]);
  });

  test('locks on the inode with no visible holder are a user with pid null', async () => {
    const v = fs.statSync(at('images/d1/v.qcow2'), { bigint: true });
    fs.writeFileSync(path.join(proc, 'locks'), `1: ${ofd(v.ino, v.dev)}\n`);
    const { users } = await new VolumeUsage(root, { procRoot: proc }).findUsers({ volume: at('images/d1/v.qcow2') });
    expect(users).toEqual([{ kind: 'lockedBy', pid: null, locks: ['OFDLCK READ 100-101'] }]);
  });

  test('the pid listening on a QMP socket path', () => {
    fs.writeFileSync(
      path.join(proc, 'net', 'unix'),
      [
        'Num       RefCount Protocol Flags    Type St Inode Path',
        '0000000000000000: 00000002 00000000 00010000 0001 01 5551 /run/lm/vm1/qmp.sock',
      ].join('\n'),
    );
    fs.writeFileSync(path.join(proc, 'locks'), '');
    fakeProcess(201, 'qemu-system-x86', { 3: 'socket:[5550]', 4: 'socket:[5551]' });
    fakeProcess(202, 'bash', { 3: 'socket:[5552]' });
    expect(listenerPids('/run/lm/vm1/qmp.sock', proc)).toEqual([201]);
    expect(listenerPids('/run/lm/vm2/qmp.sock', proc)).toEqual([]);
  });
});

/**
 * The guard's read of the host's file locks (src/volume-users/proc-locks.ts): on the real
 * /proc/locks with a lock held by `flock`, and on a /proc/locks written here (one larger than a
 * read, for the reader's loop).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { devMajorMinor, fileIdOf } from '../../src/volume-users/file-id';
import { locksOn, parseLockLine, ProcLocksReader, readProcLocks } from '../../src/volume-users/proc-locks';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'proc-locks-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

test('pid 0 (a holder in another pid namespace) and -1 (an OFD lock) are no pid', () => {
  expect(parseLockLine('1: POSIX  ADVISORY  WRITE 0 fe:00:42 0 EOF')?.pid).toBeNull();
  expect(parseLockLine('1: OFDLCK ADVISORY  READ -1 fe:00:42 100 101')?.pid).toBeNull();
  expect(parseLockLine('1: POSIX  ADVISORY  WRITE 1 fe:00:42 0 EOF')?.pid).toBe(1);
});

test('whitespace around a line is no part of it', () => {
  expect(parseLockLine('  1: POSIX  ADVISORY  WRITE 2569 fe:00:42 0 EOF \r')).toMatchObject({
    pid: 2569,
    ino: 42n,
    end: null,
  });
});

test('a lock is on a file only with its inode, major and minor all equal', () => {
  const file = path.join(dir, 'v.qcow2');
  fs.writeFileSync(file, '');
  const id = fileIdOf(fs.statSync(file, { bigint: true }));
  const { major, minor } = devMajorMinor(id.dev);
  const hex = (n: number): string => n.toString(16).padStart(2, '0');
  const line = (maj: number, min: number, ino: bigint): string =>
    `1: OFDLCK ADVISORY  READ -1 ${hex(maj)}:${hex(min)}:${ino} 100 101`;
  const on = (l: string): number =>
    locksOn(
      [parseLockLine(l)].flatMap((x) => (x ? [x] : [])),
      id,
    ).length;
  expect(on(line(major, minor, id.ino))).toBe(1);
  expect(on(line(major + 1, minor, id.ino))).toBe(0);
  expect(on(line(major, minor + 1, id.ino))).toBe(0);
  expect(on(line(major, minor, id.ino + 1n))).toBe(0);
});

describe('the real /proc/locks', () => {
  test('a flock held by another process is read by readProcLocks and ProcLocksReader, with its pid', async () => {
    const file = path.join(dir, 'held');
    fs.writeFileSync(file, '');
    const id = fileIdOf(fs.statSync(file, { bigint: true }));
    const holder = spawn('flock', ['--exclusive', file, 'sleep', '30'], { stdio: 'ignore' });
    const reader = new ProcLocksReader();
    try {
      const deadline = Date.now() + 10_000;
      while (locksOn(readProcLocks(), id).length === 0) {
        if (Date.now() > deadline) throw new Error('flock never took its lock');
        await new Promise((r) => setTimeout(r, 20));
      }
      const expected = [expect.objectContaining({ kind: 'FLOCK', access: 'WRITE', pid: holder.pid, ino: id.ino })];
      expect(locksOn(readProcLocks(), id)).toEqual(expected);
      expect(locksOn(await reader.read(), id)).toEqual(expected);
    } finally {
      reader.close();
      holder.kill('SIGKILL');
    }
  });
});

describe('ProcLocksReader', () => {
  const line = (i: number): string => `${i + 1}: OFDLCK ADVISORY  READ -1 fe:00:${1000 + i} 100 101\n`;

  test('a /proc/locks larger than one read is read whole, and read again from its start each time', async () => {
    const count = 12_000; // about 600 KiB: three reads
    fs.writeFileSync(path.join(dir, 'locks'), Array.from({ length: count }, (_, i) => line(i)).join(''));
    expect(fs.statSync(path.join(dir, 'locks')).size).toBeGreaterThan(2 * 256 * 1024);
    const reader = new ProcLocksReader(dir);
    try {
      for (const _ of [1, 2]) {
        const locks = await reader.read();
        expect(locks).toHaveLength(count);
        expect(locks[count - 1].ino).toBe(BigInt(1000 + count - 1));
      }
    } finally {
      reader.close();
    }
  });

  test('close() closes the fd it kept open', async () => {
    const locks = path.join(dir, 'locks');
    fs.writeFileSync(locks, line(0));
    const heldOn = (): string[] =>
      fs.readdirSync('/proc/self/fd').filter((fd) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${fd}`) === locks;
        } catch {
          return false;
        }
      });
    const reader = new ProcLocksReader(dir);
    await reader.read();
    expect(heldOn()).toHaveLength(1);
    reader.close();
    await new Promise((r) => setTimeout(r, 50));
    expect(heldOn()).toEqual([]);
  });
});

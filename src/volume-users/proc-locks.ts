import { close, open, read, readFileSync } from 'node:fs';

import { z } from 'zod';

import { devMajorMinor, type FileId } from './file-id';

/**
 * One line of /proc/locks, or a `lock:` line of /proc/<pid>/fdinfo/<fd> (the same format):
 *   `1: OFDLCK ADVISORY  READ -1 fe:00:9977906 100 101`
 *   `2: POSIX  ADVISORY  WRITE 2569 fe:00:10035213 0 EOF`
 * QEMU takes OFD locks (`OFDLCK`) on bytes 100+ of every image it opens; the kernel prints -1 as
 * their pid (an OFD lock belongs to an open file description, not a process), so the holder is
 * found through the fdinfo of the fds open on the same inode (see proc-fds.ts).
 */
export interface LockEntry {
  kind: string; // OFDLCK, POSIX, FLOCK, LEASE, DELEG...
  access: string; // READ, WRITE, ...
  /** The pid the kernel prints; null for OFD locks (-1) and for a holder in another pid namespace. */
  pid: number | null;
  major: number;
  minor: number;
  ino: bigint;
  start: bigint;
  /** null for EOF (to the end of the file). */
  end: bigint | null;
}

const LINE =
  /^(?:lock:\s+)?\d+:\s+(?:->\s+)?(\S+)\s+\S+\s+(\S+)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s+(\d+)\s+(\d+|EOF)\s*$/;

const lockSchema = z.object({
  kind: z.string().regex(/^[A-Z_]+$/),
  access: z.string().regex(/^[A-Z_]+$/),
  pid: z.coerce.number().int(),
  major: z.string().transform((h) => parseInt(h, 16)),
  minor: z.string().transform((h) => parseInt(h, 16)),
  ino: z.string().transform((d) => BigInt(d)),
  start: z.string().transform((d) => BigInt(d)),
  end: z.string().transform((d) => (d === 'EOF' ? null : BigInt(d))),
});

/**
 * Parses one lock line; undefined for a line that is not one (a blocked waiter's `->` line is
 * parsed like the lock itself: it names the same file). Garbage never becomes a lock on inode 0.
 */
export function parseLockLine(line: string): LockEntry | undefined {
  const m = LINE.exec(line.trim());
  if (!m) return undefined;
  const parsed = lockSchema.safeParse({
    kind: m[1],
    access: m[2],
    pid: m[3],
    major: m[4],
    minor: m[5],
    ino: m[6],
    start: m[7],
    end: m[8],
  });
  if (!parsed.success) return undefined;
  const { pid, ...rest } = parsed.data;
  return { ...rest, pid: pid > 0 ? pid : null };
}

export function parseProcLocks(text: string): LockEntry[] {
  const out: LockEntry[] = [];
  for (const line of text.split('\n')) {
    const lock = parseLockLine(line);
    if (lock) out.push(lock);
  }
  return out;
}

/** The locks of `text` (a /proc/locks or fdinfo text) that lie on `file`'s inode. */
export function locksOn(locks: LockEntry[], file: FileId): LockEntry[] {
  const { major, minor } = devMajorMinor(file.dev);
  return locks.filter((l) => l.ino === file.ino && l.major === major && l.minor === minor);
}

/** /proc/locks, read in one go (one small file: every lock on the host). */
export function readProcLocks(procRoot = '/proc'): LockEntry[] {
  return parseProcLocks(readFileSync(`${procRoot}/locks`, 'utf8'));
}

/**
 * /proc/locks read on the thread pool in one operation (a `pread` at offset 0 on an fd kept open),
 * so a guard can start it first and walk the tree meanwhile. The first read of /proc/locks after
 * a pause takes 10-25 ms here, nearly all of it waiting, not CPU (the kernel takes its file-lock
 * rwsem for writing, which waits for an RCU grace period). A `readFile` would not do: its open,
 * stat, read and close are four pool operations, each queued only when the main thread, busy
 * with the walk, gets to it.
 */
export class ProcLocksReader {
  private fd: Promise<number> | undefined;

  constructor(private readonly procRoot = '/proc') {}

  async read(): Promise<LockEntry[]> {
    this.fd ??= new Promise((resolve, reject) =>
      open(`${this.procRoot}/locks`, 'r', (err, fd) => (err ? reject(err) : resolve(fd))),
    );
    const fd = await this.fd.catch((err: unknown) => {
      this.fd = undefined;
      throw err;
    });
    const chunks: Buffer[] = [];
    for (let pos = 0; ;) {
      const buf = Buffer.allocUnsafe(256 * 1024);
      const n = await new Promise<number>((resolve, reject) =>
        read(fd, buf, 0, buf.length, pos, (err, bytes) => (err ? reject(err) : resolve(bytes))),
      );
      chunks.push(buf.subarray(0, n));
      pos += n;
      if (n === 0 || n < buf.length) break;
    }
    return parseProcLocks(Buffer.concat(chunks).toString('utf8'));
  }

  close(): void {
    void this.fd?.then(
      (fd) => close(fd),
      () => undefined,
    );
    this.fd = undefined;
  }
}

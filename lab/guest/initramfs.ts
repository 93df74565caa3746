/**
 * A newc ("070701") cpio archive, the format the Linux kernel unpacks as its initramfs, written
 * without a cpio tool or root: device nodes are entries in the archive, not files on the host.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

export type CpioEntry =
  | { kind: 'dir'; name: string; perm?: number }
  | { kind: 'file'; name: string; perm: number; data: Buffer }
  | { kind: 'symlink'; name: string; target: string }
  | { kind: 'chardev'; name: string; perm: number; major: number; minor: number };

const hex8 = (n: number): string => {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio field ${n} does not fit 32 bits`);
  return n.toString(16).padStart(8, '0');
};
const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);

function record(ino: number, mode: number, name: string, data: Buffer, rdev: [number, number] = [0, 0]): Buffer[] {
  const nameBuf = Buffer.from(`${name}\0`, 'utf8');
  const fields = [
    ino,
    mode,
    0,
    0,
    (mode & S_IFDIR) === S_IFDIR ? 2 : 1,
    0,
    data.length,
    0,
    0,
    ...rdev,
    nameBuf.length,
    0,
  ];
  const header = Buffer.from(`070701${fields.map(hex8).join('')}`, 'ascii');
  return [header, nameBuf, pad4(header.length + nameBuf.length), data, pad4(data.length)];
}

/** The archive of `entries`, in order (a directory must come before what it holds), with its trailer. */
export function buildCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  entries.forEach((e, i) => {
    const name = e.name.replace(/^\/+/, '');
    if (name === '' || name.split('/').includes('..')) throw new Error(`bad archive path ${JSON.stringify(e.name)}`);
    const ino = i + 1;
    switch (e.kind) {
      case 'dir':
        parts.push(...record(ino, S_IFDIR | (e.perm ?? 0o755), name, Buffer.alloc(0)));
        break;
      case 'file':
        parts.push(...record(ino, S_IFREG | e.perm, name, e.data));
        break;
      case 'symlink':
        parts.push(...record(ino, S_IFLNK | 0o777, name, Buffer.from(e.target, 'utf8')));
        break;
      case 'chardev':
        parts.push(...record(ino, S_IFCHR | e.perm, name, Buffer.alloc(0), [e.major, e.minor]));
        break;
    }
  });
  parts.push(...record(0, 0, 'TRAILER!!!', Buffer.alloc(0)));
  return Buffer.concat(parts);
}

/**
 * Every directory, regular file and symlink under `root` as archive entries (sorted, parents first),
 * with their permission bits; owner root, mtime 0, so the same tree gives the same bytes.
 */
export async function entriesOfTree(root: string): Promise<CpioEntry[]> {
  const out: CpioEntry[] = [];
  const walk = async (rel: string): Promise<void> => {
    const names = (await fs.readdir(path.join(root, rel))).sort();
    for (const n of names) {
      const relName = rel ? `${rel}/${n}` : n;
      const abs = path.join(root, relName);
      const st = await fs.lstat(abs);
      if (st.isDirectory()) {
        out.push({ kind: 'dir', name: relName, perm: st.mode & 0o7777 });
        await walk(relName);
      } else if (st.isSymbolicLink()) {
        out.push({ kind: 'symlink', name: relName, target: await fs.readlink(abs) });
      } else if (st.isFile()) {
        out.push({ kind: 'file', name: relName, perm: st.mode & 0o7777, data: await fs.readFile(abs) });
      } else {
        throw new Error(`${abs} is neither a directory, a file nor a symlink`);
      }
    }
  };
  await walk('');
  return out;
}

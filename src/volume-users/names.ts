import { readFileSync, realpathSync } from 'node:fs';
import * as path from 'node:path';

/**
 * Whether two paths that reach the same inode are the same *name* of it, or two names (hard
 * links). Only a use of the volume's own name stops its delete: a hard link keeps the data alive
 * after the unlink. But the same name can be reached by several paths (a symlink on the way, a
 * bind mount of the storage root), and those must count. So each path is reduced to the name the
 * file system itself knows: symlinks resolved (realpath), then the mount it lies on swapped for
 * that mount's device and root inside the file system (from /proc/self/mountinfo).
 * Returns undefined when that cannot be told (a path unreachable from here, another mount
 * namespace): callers count that as the same name, the safe side.
 */
export function sameName(a: string, b: string, mountinfo: MountTable = readMountTable()): boolean | undefined {
  const ca = canonicalName(a, mountinfo);
  const cb = canonicalName(b, mountinfo);
  if (ca === undefined || cb === undefined) return undefined;
  return ca === cb;
}

export interface Mount {
  majorMinor: string;
  /** The directory of the file system this mount shows. */
  root: string;
  mountPoint: string;
}
export type MountTable = Mount[];

/** `\040`-style escapes of mountinfo fields. */
const unescape = (s: string): string =>
  s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function parseMountinfo(text: string): MountTable {
  const mounts: MountTable = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 5 || !/^\d+:\d+$/.test(f[2])) continue;
    mounts.push({ majorMinor: f[2], root: unescape(f[3]), mountPoint: unescape(f[4]) });
  }
  return mounts;
}

export function readMountTable(): MountTable {
  return parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** `<maj:min>:<path inside that file system>` of an existing path, or undefined. */
export function canonicalName(p: string, mounts: MountTable): string | undefined {
  let real: string;
  try {
    real = realpathSync(p);
  } catch {
    return undefined;
  }
  // The last mount listed on the longest matching mount point is the visible one.
  let best: Mount | undefined;
  for (const m of mounts) {
    const under = m.mountPoint === '/' || real === m.mountPoint || real.startsWith(m.mountPoint + '/');
    if (under && (!best || m.mountPoint.length >= best.mountPoint.length)) best = m;
  }
  if (!best) return undefined;
  // The mount point itself is the mount's root, with no trailing slash: a file can be a mount
  // point too (a file bind mount), and must then reduce to the name it shows.
  return `${best.majorMinor}:${path.posix.join(best.root, real.slice(best.mountPoint.length))}`;
}

import { readFileSync, statSync } from 'node:fs';

import { type FdWalkStats, walkFds } from '../procfs/fd-walk';
import { type FileId, fileIdOf, sameInode } from './file-id';
import { type MountTable, readMountTable, sameName } from './names';
import { type LockEntry, parseProcLocks } from './proc-locks';

export function processName(pid: number, procRoot = '/proc'): string {
  try {
    return readFileSync(`${procRoot}/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

export interface FdOnFile {
  /** Index of the target (in the list given to `fdsOnFiles`) this fd is open on. */
  target: number;
  pid: number;
  fd: number;
  /** The path the process opened it by (the fd link). */
  path: string;
  /** Whether that is the target's own name (false: another hard link to the same inode). */
  sameName: boolean;
  /** Its locks, from /proc/<pid>/fdinfo/<fd> (QEMU's OFD image locks show up here with the holder). */
  locks: LockEntry[];
}

export interface FdScan extends FdWalkStats {
  fdsOnFile: FdOnFile[];
  /** fd links stat'ed to compare inodes (the candidates, see `fdsOnFiles`). */
  statted: number;
}

export interface FdTarget {
  path: string;
  id: FileId;
}

/**
 * Every fd of every process open on one of the targets' inodes, in one walk of /proc. A
 * candidate fd is stat'ed through its /proc link (so the open file itself is checked, not whatever
 * that path names now) and compared by device and inode: a bind mount or a symlinked directory
 * reaches the same name by another path, so paths alone would miss it. When the inode has other
 * names, `sameName` tells a hard link (not a use of this name) from another path to this name.
 *
 * Candidates: an fd link is the kernel's d_path of the dentry the file was opened by, so its last
 * component is always the name of that link: any path to a target's own name ends in the
 * target's basename, and only those fds are stat'ed (the stat is most of the cost per fd). When
 * a target has other hard links, every fd with a path is stat'ed instead: a process holding the
 * inode by another name must be seen to tell its locks from those of a holder not visible here.
 */
export function fdsOnFiles(targets: readonly FdTarget[], procRoot = '/proc'): FdScan {
  const found: FdOnFile[] = [];
  let statted = 0;
  let mounts: MountTable | undefined;
  const basenames = new Set(targets.map((t) => t.path.slice(t.path.lastIndexOf('/') + 1)));
  const everyPath = targets.some((t) => t.id.nlink > 1n);
  const walk = walkFds(procRoot, (pid, fd, link) => {
    // Sockets, pipes, anon inodes; a "(deleted)" link is an unlinked name, never a target's.
    if (targets.length === 0 || !link.startsWith('/') || link.endsWith(' (deleted)')) return;
    if (!everyPath && !basenames.has(link.slice(link.lastIndexOf('/') + 1))) return;
    let id: FileId | undefined;
    try {
      statted++;
      id = fileIdOf(statSync(`${procRoot}/${pid}/fd/${fd}`, { bigint: true }));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // closed meanwhile
      // Its inode cannot be read: its path alone decides (a target's own path is a use).
    }
    targets.forEach((target, i) => {
      if (id === undefined ? link !== target.path : !sameInode(id, target.id)) return;
      let same = true;
      if (link !== target.path && target.id.nlink > 1n) {
        mounts ??= readMountTable();
        same = sameName(link, target.path, mounts) ?? true;
      }
      found.push({ target: i, pid, fd, path: link, sameName: same, locks: fdinfoLocks(procRoot, pid, fd) });
    });
  });
  return { ...walk, fdsOnFile: found, statted };
}

function fdinfoLocks(procRoot: string, pid: number, fd: number): LockEntry[] {
  try {
    return parseProcLocks(readFileSync(`${procRoot}/${pid}/fdinfo/${fd}`, 'utf8'));
  } catch {
    return [];
  }
}

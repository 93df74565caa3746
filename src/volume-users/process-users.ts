import { type FdScan, processName } from './proc-fds';
import type { LockEntry } from './proc-locks';
import type { VolumeUser } from './volume-users';

/**
 * The processes among `fds` (the /proc scan) that use target `j` by its own name, as `openBy`
 * (and `lockedBy` when their fd carries locks, QEMU's OFD image locks), the expected pids left
 * out. A process holding the inode by another hard link only is no user: its data survives the
 * unlink of this name, and its locks belong to that fd, not to this name.
 */
export function processUsers(
  fds: FdScan,
  j: number,
  inodeLocks: LockEntry[],
  expected: Set<number>,
  procRoot: string,
): VolumeUser[] {
  const onFile = fds.fdsOnFile.filter((f) => f.target === j);
  const open = new Map<number, { paths: Set<string>; locks: Set<string> }>();
  for (const f of onFile.filter((f) => f.sameName && !expected.has(f.pid))) {
    const e = open.get(f.pid) ?? { paths: new Set(), locks: new Set() };
    e.paths.add(f.path);
    for (const l of f.locks) e.locks.add(lockText(l));
    open.set(f.pid, e);
  }
  const users: VolumeUser[] = [];
  for (const [pid, e] of [...open].sort((a, b) => a[0] - b[0])) {
    const name = processName(pid, procRoot);
    users.push({ kind: 'openBy', pid, process: name, paths: [...e.paths] });
    if (e.locks.size > 0) users.push({ kind: 'lockedBy', pid, process: name, locks: [...e.locks] });
  }
  // Locks on the inode, but no process seen with it open under any name: the holder is not
  // visible from here. That is a user, unless the kernel names an expected pid (POSIX locks).
  if (onFile.length === 0) {
    const byPid = new Map<number | null, Set<string>>();
    for (const l of inodeLocks.filter((l) => l.pid === null || !expected.has(l.pid))) {
      byPid.set(l.pid, (byPid.get(l.pid) ?? new Set()).add(lockText(l)));
    }
    for (const [pid, locks] of byPid) users.push({ kind: 'lockedBy', pid, locks: [...locks] });
  }
  return users;
}

export const lockText = (l: LockEntry): string => `${l.kind} ${l.access} ${l.start}-${l.end ?? 'EOF'}`;

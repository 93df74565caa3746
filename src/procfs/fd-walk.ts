import { readdirSync, readlinkSync } from 'node:fs';

export interface FdWalkStats {
  processes: number;
  fds: number;
  /**
   * Processes whose fds could not be read (EACCES: another user without root, or a process this
   * agent's capabilities do not reach): a blind spot. Their OFD locks still show in /proc/locks,
   * which is how a QEMU there is still seen (as `lockedBy` with pid null); a plain open is not.
   */
  unreadablePids: number[];
}

/**
 * Calls `visit` with every fd link of every process: `/proc/<pid>/fd/<n>` → `/path`,
 * `socket:[123]`, `pipe:[…]`, `anon_inode:…`. Synchronous on purpose: each call is a tiny procfs
 * syscall that the thread pool would make several times dearer, and the whole walk is bounded by
 * the host's fd count (about 7 µs per fd here, measured by bench/guard.ts). Processes and fds
 * that vanish meanwhile are skipped.
 */
export function walkFds(procRoot: string, visit: (pid: number, fd: number, link: string) => void): FdWalkStats {
  const stats: FdWalkStats = { processes: 0, fds: 0, unreadablePids: [] };
  for (const entry of readdirSync(procRoot)) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    let fds: string[];
    try {
      fds = readdirSync(`${procRoot}/${entry}/fd`);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') stats.unreadablePids.push(pid);
      continue;
    }
    stats.processes++;
    for (const fd of fds) {
      let link: string;
      try {
        link = readlinkSync(`${procRoot}/${entry}/fd/${fd}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // closed meanwhile
        stats.unreadablePids.push(pid); // one denied fd: the rest of this process is denied too
        break;
      }
      stats.fds++;
      visit(pid, Number(fd), link);
    }
  }
  return stats;
}

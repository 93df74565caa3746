import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { z } from 'zod';

import { qmpSocketPath } from '../../domain/layout';
import { walkFds } from './proc-fds';

/** `__SO_ACCEPTCON` in /proc/net/unix's Flags column: the socket listens. */
const SO_ACCEPTCON = 0x10000;

const unixLineSchema = z.object({
  flags: z
    .string()
    .regex(/^[0-9A-Fa-f]+$/)
    .transform((h) => parseInt(h, 16)),
  inode: z.string().regex(/^\d+$/),
  path: z.string().min(1),
});

/**
 * The socket inodes listening on `socketPath`, from /proc/net/unix
 * (`Num RefCount Protocol Flags Type St Inode Path`). The path column is the name the socket was
 * bound with: QEMU binds the `-qmp unix:<path>` it was given, so the product starts QEMU with
 * the absolute path of `qmpSocketPath`. Only sockets of this network namespace are listed.
 */
export function parseListeningInodes(procNetUnix: string, socketPath: string): string[] {
  const inodes: string[] = [];
  for (const line of procNetUnix.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const parsed = unixLineSchema.safeParse({ flags: f[3], inode: f[6], path: f.slice(7).join(' ') });
    if (!parsed.success) continue;
    if ((parsed.data.flags & SO_ACCEPTCON) !== 0 && parsed.data.path === socketPath) inodes.push(parsed.data.inode);
  }
  return inodes;
}

/**
 * The pids of the processes that hold the listening unix socket bound at `socketPath`: for a VM's
 * QMP socket, its QEMU (one pid, unless QEMU forked a helper that inherited the fd). Empty when
 * nothing listens there (no VM, or a stale socket file of a dead QEMU).
 */
export function listenerPids(socketPath: string, procRoot = '/proc'): number[] {
  const absolute = path.resolve(socketPath);
  const inodes = new Set(parseListeningInodes(readFileSync(`${procRoot}/net/unix`, 'utf8'), absolute));
  if (inodes.size === 0) return [];
  const links = new Set([...inodes].map((i) => `socket:[${i}]`));
  const pids = new Set<number>();
  walkFds(procRoot, (pid, _fd, link) => {
    if (links.has(link)) pids.add(pid);
  });
  return [...pids].sort((a, b) => a - b);
}

/** The QEMU pid(s) of a VM, found by its QMP socket `<runDir>/<vmId>/qmp.sock`. */
export function vmQemuPids(runDir: string, vmId: string, procRoot = '/proc'): number[] {
  return listenerPids(qmpSocketPath(runDir, vmId), procRoot);
}

import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { qmpSocketPath } from '../../domain/layout';
import { walkFds } from '../../procfs/fd-walk';

/** `__SO_ACCEPTCON` in /proc/net/unix's Flags column: the socket listens. */
const SO_ACCEPTCON = 0x10000;

/**
 * A line of /proc/net/unix as the kernel prints it (`%pK: %08X %08X %08X %04X %02X %5lu`, then a
 * space and the path when the socket has one): the Flags, the Inode, and the path verbatim to the
 * end of the line, its spaces included. The header line and a socket without a path do not match.
 */
const UNIX_LINE = /^[0-9A-Fa-f]+: [0-9A-F]{8} [0-9A-F]{8} ([0-9A-F]{8}) [0-9A-F]{4} [0-9A-F]{2} +(\d+) (.+)$/;

/**
 * The socket inodes listening on `socketPath`, from /proc/net/unix
 * (`Num RefCount Protocol Flags Type St Inode Path`). The path column is the name the socket was
 * bound with: QEMU binds the `-qmp unix:<path>` it was given, so the product starts QEMU with
 * the absolute path of `qmpSocketPath`. A name that differs only by white space is another
 * socket. Only sockets of this network namespace are listed.
 */
export function parseListeningInodes(procNetUnix: string, socketPath: string): string[] {
  const inodes: string[] = [];
  for (const line of procNetUnix.split('\n')) {
    const m = UNIX_LINE.exec(line);
    if (m && (parseInt(m[1], 16) & SO_ACCEPTCON) !== 0 && m[3] === socketPath) inodes.push(m[2]);
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

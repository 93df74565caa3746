import type { BigIntStats } from 'node:fs';

/**
 * A file as the kernel knows it: device and inode (what /proc/locks and fd links resolve to) and
 * its link count (more than one name means an inode match alone does not say "this name").
 */
export interface FileId {
  dev: bigint;
  ino: bigint;
  nlink: bigint;
}

export function fileIdOf(st: BigIntStats): FileId {
  return { dev: st.dev, ino: st.ino, nlink: st.nlink };
}

export function sameInode(a: FileId, b: FileId): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/**
 * `st_dev` as Node reports it (glibc's `makedev` of statx's major and minor) split back into the
 * major and minor numbers that /proc/locks prints (as hex `MAJ:MIN`).
 */
export function devMajorMinor(dev: bigint): { major: number; minor: number } {
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & 0xfffff000n));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & 0xffffff00n));
  return { major, minor };
}

import { type FileId, sameInode } from './file-id';
import type { ImageRecord, IndexScan } from './image-index';
import { type MountTable, sameName } from './names';
import type { VolumeUser } from './volume-users';

export interface Target {
  path: string;
  id: FileId | undefined;
}

/**
 * Images whose backing name reaches the volume's name. The backing path is compared as text
 * first; otherwise by inode (the walk's own stat for a file under the root, one stat for one
 * elsewhere), and an inode with several names by its canonical name (names.ts).
 */
export function dependants(
  scan: IndexScan,
  t: Target,
  expected: Set<string>,
  statOf: (p: string) => FileId | undefined,
  mounts: () => MountTable,
): VolumeUser[] {
  const users: VolumeUser[] = [];
  for (const r of scan.files.values()) {
    if (r.backing === undefined || r.path === t.path || expected.has(r.path)) continue;
    if (backsOn(r, t, scan, statOf, mounts)) users.push({ kind: 'backingOf', image: r.path });
  }
  return users.sort((a, b) => (a.kind === 'backingOf' && b.kind === 'backingOf' ? a.image.localeCompare(b.image) : 0));
}

function backsOn(
  r: ImageRecord,
  t: Target,
  scan: IndexScan,
  statOf: (p: string) => FileId | undefined,
  mounts: () => MountTable,
): boolean {
  const b = r.backing as string;
  if (b === t.path) return true;
  if (!t.id) return false;
  const id = scan.files.get(b)?.id ?? statOf(b);
  if (!id || !sameInode(id, t.id)) return false;
  return t.id.nlink === 1n || (sameName(b, t.path, mounts()) ?? true);
}

/** Directories and files under the root that could not be read: each might name the volume. */
export function unreadable(scan: IndexScan, t: Target, expected: Set<string>): VolumeUser[] {
  return [
    ...scan.unreadableDirs.map((d) => ({ kind: 'unreadable' as const, path: d.path, error: d.error })),
    ...[...scan.files.values()].flatMap((r) =>
      r.unreadable !== undefined && r.path !== t.path && !expected.has(r.path)
        ? [{ kind: 'unreadable' as const, path: r.path, error: r.unreadable }]
        : [],
    ),
  ];
}

import { realpathSync } from 'node:fs';

import { dirOf, type OpenedFile, readDataFileName, readName } from '../storage/image-names';
import { CorruptImageHeaderError, type ImageRefs, readImageRefs } from '../storage/qemu-img';
import { type FileId, sameInode } from './file-id';
import type { ImageRecord, IndexScan } from './image-index';
import { type MountTable, sameName } from './names';
import type { VolumeUser } from './volume-users';

export interface Target {
  path: string;
  id: FileId | undefined;
}

/** QEMU follows names from file to file; a chain deeper than this is refused, not followed on. */
export const MAX_NAME_DEPTH = 64;

/** The users an image's names make: each names the image (or the file) it is about. */
type ImageUser = Extract<VolumeUser, { kind: 'backingOf' | 'dataFileOf' | 'unresolvedName' | 'unreadable' }>;

export interface DependantsContext {
  scan: IndexScan;
  statOf: (p: string) => FileId | undefined;
  mounts: () => MountTable;
  /** The names a file outside the walk holds (read once per scan). */
  refsOf?: (p: string) => Promise<ImageRefs | undefined>;
}

/**
 * Images under the root that make QEMU open the volume's name: by their backing or data file name,
 * or through the names of files outside the walk that those name in turn, each name read as QEMU
 * reads it (image-names.ts). A file is the volume when it is by text, or by inode and then by
 * canonical name (names.ts). A name that cannot be tied to a file here is a user of its own kind
 * (`unresolvedName`): it might be the volume.
 */
export async function dependants(t: Target, expected: Set<string>, ctx: DependantsContext): Promise<VolumeUser[]> {
  const users: ImageUser[] = [];
  for (const r of ctx.scan.files.values()) {
    if (r.refs === undefined || r.path === t.path || expected.has(r.path)) continue;
    users.push(...(await usesOf(r, r.refs, t, ctx)));
  }
  return users.sort((a, b) => imageOf(a).localeCompare(imageOf(b)));
}

async function usesOf(r: ImageRecord, refs: ImageRefs, t: Target, ctx: DependantsContext): Promise<ImageUser[]> {
  const users: ImageUser[] = [];
  const unresolved = (why: string): void => void users.push({ kind: 'unresolvedName', image: r.path, why });
  const refsOf = ctx.refsOf ?? readImageRefs;
  type Step = { file: OpenedFile; as: 'backing' | 'data file'; through: string[] };
  const queue: Step[] = [];
  const follow = (from: string, names: ImageRefs, through: string[], opened?: OpenedFile): void => {
    if (names.opaque !== undefined) unresolved(`${from} is ${names.opaque}`);
    for (const [name, as] of [
      [opened?.followsBacking === false ? undefined : names.backing, 'backing'],
      [opened?.followsDataFile === false ? undefined : names.dataFile, 'data file'],
    ] as const) {
      if (name === undefined) continue;
      const reading = as === 'backing' ? readName(name, dirOf(from)) : readDataFileName(name);
      for (const why of reading.unresolved) unresolved(`its ${as} name ${why}`);
      for (const file of reading.files) queue.push({ file, as, through });
    }
  };
  follow(r.path, refs, []);
  for (let step = queue.shift(); step !== undefined; step = queue.shift()) {
    const { file, as, through } = step;
    if (isTarget(file.path, t, ctx)) {
      users.push({
        kind: as === 'backing' ? 'backingOf' : 'dataFileOf',
        image: r.path,
        ...(through.length ? { through } : {}),
      });
      return users;
    }
    if (isJudgedAlone(file.path, ctx)) continue;
    if (through.length + 1 >= MAX_NAME_DEPTH) {
      unresolved(`its names lead through more than ${MAX_NAME_DEPTH} files`);
      continue;
    }
    let names: ImageRefs | undefined;
    try {
      names = await refsOf(file.path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') continue; // QEMU cannot open it either
      users.push({
        kind: 'unreadable',
        path: file.path,
        error: err instanceof CorruptImageHeaderError ? err.message : String(err),
      });
      continue;
    }
    if (names) follow(file.path, names, [...through, file.path], file);
  }
  return users;
}

function isTarget(p: string, t: Target, ctx: DependantsContext): boolean {
  if (p === t.path) return true;
  if (!t.id) return false;
  const id = ctx.scan.files.get(p)?.id ?? ctx.statOf(p);
  if (!id || !sameInode(id, t.id)) return false;
  return t.id.nlink === 1n || (sameName(p, t.path, ctx.mounts()) ?? true);
}

/**
 * A file the walk recorded, opened from the same directory: its names resolve as they do for its
 * record, which is judged on its own (and an expected image, the chain's own layer, is no user).
 */
function isJudgedAlone(p: string, ctx: DependantsContext): boolean {
  if (ctx.scan.files.has(p)) return true;
  const id = ctx.statOf(p);
  if (!id) return false;
  const dir = realDir(dirOf(p));
  return (
    dir !== undefined &&
    (recordsOf(ctx.scan).get(`${id.dev}:${id.ino}`) ?? []).some((r) => realDir(dirOf(r.path)) === dir)
  );
}

const byInode = new WeakMap<IndexScan, Map<string, ImageRecord[]>>();

/** The scan's records by inode, built once per scan when a name leaves the walked paths. */
function recordsOf(scan: IndexScan): Map<string, ImageRecord[]> {
  let m = byInode.get(scan);
  if (!m) {
    m = new Map();
    for (const r of scan.files.values()) {
      const k = `${r.id.dev}:${r.id.ino}`;
      m.set(k, [...(m.get(k) ?? []), r]);
    }
    byInode.set(scan, m);
  }
  return m;
}

function realDir(dir: string): string | undefined {
  try {
    return realpathSync(dir);
  } catch {
    return undefined;
  }
}

function imageOf(u: ImageUser): string {
  return 'image' in u ? u.image : u.path;
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

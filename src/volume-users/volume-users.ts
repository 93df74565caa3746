import { realpathSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { readImageRefs } from '../storage/qemu-img';
import { dependants, type DependantsContext, type Target, unreadable } from './dependants';
import { type FileId, fileIdOf } from './file-id';
import { ImageIndex, type ImageIndexOptions, type IndexScan } from './image-index';
import { readMountTable } from './names';
import { type FdScan, fdsOnFiles } from './proc-fds';
import { type LockEntry, locksOn, ProcLocksReader } from './proc-locks';
import { processUsers } from './process-users';

/** Something other than the expected users that uses a volume. */
export type VolumeUser =
  /**
   * An image under the storage root that makes QEMU open the volume as its backing file (or, with
   * `through`, as the backing of the files it names in turn, outside the walk).
   */
  | { kind: 'backingOf'; image: string; through?: string[] }
  /** An image under the root whose external data file is the volume (or is, `through` other files). */
  | { kind: 'dataFileOf'; image: string; through?: string[] }
  /** An image under the root holding a name that cannot be tied to a file here (`why`): it may name the volume. */
  | { kind: 'unresolvedName'; image: string; why: string }
  /** A process with the volume open under its own name (`paths`: the names it opened it by). */
  | { kind: 'openBy'; pid: number; process: string; paths: string[] }
  /**
   * A process holding locks on it (QEMU's OFD image locks); pid null when the kernel lists locks on
   * the inode but no visible process has it open (another pid namespace, an fd in flight).
   */
  | { kind: 'lockedBy'; pid: number | null; process?: string; locks: string[] }
  /** A file or directory under the root that could not be read: it might name the volume. */
  | { kind: 'unreadable'; path: string; error: string };

export interface VolumeUsersQuery {
  /** The volume file, e.g. `volumePath(storageRoot, diskId, volumeId)`. */
  volume: string;
  /** Images allowed to name it as backing (paths), e.g. the layer above a top. */
  expectedImages?: readonly string[];
  /** Processes allowed to hold it open or locked, e.g. the VM's QEMU (`vmQemuPids`). */
  expectedPids?: readonly number[];
}

export interface VolumeUsers {
  /** The volume's path with symlinks resolved, the name that was looked for. */
  volume: string;
  /** False when there is no such file (only images naming it can be found then). */
  exists: boolean;
  /** Every unexpected user; empty means the volume may be written into or deleted. */
  users: VolumeUser[];
}

export interface GuardStats {
  images: number;
  dirs: number;
  headersRead: number;
  processes: number;
  fds: number;
  /** Processes whose fds could not be read (see `FdWalkStats.unreadablePids`). */
  unreadablePids: number[];
  indexMs: number;
  procMs: number;
  totalMs: number;
}

export interface VolumeUsageOptions {
  index?: ImageIndexOptions;
  procRoot?: string;
}

/**
 * "Who else uses this volume file?" for the whole host: images anywhere under the storage root
 * naming it as backing, processes holding it open or locked. Returns data, never a Temporal
 * failure: the caller (merge, delete) turns users into its own refusal (see `describeUser`).
 * Keep one instance per host agent: its `ImageIndex` caches parsed headers between calls.
 *
 * "Uses" is by name: an image's backing name or a process's fd counts only if it reaches the
 * volume's own name (by any path: symlinks and bind mounts resolved), not another hard link of
 * the same inode, since the data outlives the unlink of one name. Reclaim names of deleted
 * volumes are not images (see reclaim-name.ts). Errors err on the side of a user.
 */
export class VolumeUsage {
  private index: ImageIndex | undefined;
  private readonly procRoot: string;
  private readonly locks: ProcLocksReader;

  constructor(
    readonly storageRoot: string,
    private readonly opts: VolumeUsageOptions = {},
  ) {
    this.procRoot = opts.procRoot ?? '/proc';
    this.locks = new ProcLocksReader(this.procRoot);
  }

  /** Closes the fd kept on /proc/locks (an agent that stops; tests). */
  close(): void {
    this.locks.close();
  }

  async findUsers(query: VolumeUsersQuery): Promise<VolumeUsers> {
    return (await this.findUsersOfEach([query])).results[0];
  }

  /** Several volumes (a merge's top and base) against one scan of the tree and of /proc. */
  async findUsersOfEach(queries: readonly VolumeUsersQuery[]): Promise<{ results: VolumeUsers[]; stats: GuardStats }> {
    const t0 = performance.now();
    // Started first, awaited last: its latency is a kernel wait (see ProcLocksReader).
    const locksRead = this.locks.read();
    locksRead.catch(() => undefined); // awaited below; no unhandled rejection meanwhile
    const scan = await this.scanImages();
    const targets = queries.map((q) => target(q.volume));
    const t1 = performance.now();
    const present = targets.flatMap((t, i) => (t.id ? [{ i, path: t.path, id: t.id }] : []));
    const fds: FdScan =
      present.length > 0
        ? fdsOnFiles(present, this.procRoot)
        : { processes: 0, fds: 0, unreadablePids: [], statted: 0, fdsOnFile: [] };
    const locks: LockEntry[] = await locksRead;
    const t2 = performance.now();
    const ctx = dependantsContext(scan);
    const results = await mapInOrder(queries, async (q, i): Promise<VolumeUsers> => {
      const t = targets[i];
      const expected = new Set(q.expectedImages?.map((p) => target(p).path));
      const users = await imageUsers(t, expected, ctx);
      const j = present.findIndex((p) => p.i === i);
      if (t.id)
        users.push(
          ...processUsers(
            fds,
            j,
            locksOn(locks, t.id),
            new Set([...(q.expectedPids ?? []), process.pid]),
            this.procRoot,
          ),
        );
      return { volume: t.path, exists: t.id !== undefined, users };
    });
    const stats: GuardStats = {
      images: scan.files.size,
      dirs: scan.dirs,
      headersRead: scan.headersRead,
      processes: fds.processes,
      fds: fds.fds,
      unreadablePids: fds.unreadablePids,
      indexMs: t1 - t0,
      procMs: t2 - t1,
      totalMs: performance.now() - t0,
    };
    return { results, stats };
  }

  /**
   * The images under the root that name the volume (backing, data file, names that cannot be told,
   * files that cannot be read), without the scan of /proc: a stopped VM's chain, walked layer by
   * layer, needs only the images.
   */
  async imagesNaming(volume: string): Promise<VolumeUser[]> {
    const scan = await this.scanImages();
    return imageUsers(target(volume), new Set(), dependantsContext(scan));
  }

  private scanImages(): Promise<IndexScan> {
    this.index ??= new ImageIndex(realpathSync(this.storageRoot), this.opts.index);
    return this.index.scan();
  }
}

async function imageUsers(t: Target, expected: Set<string>, ctx: DependantsContext): Promise<VolumeUser[]> {
  return [...unreadable(ctx.scan, t, expected), ...(await dependants(t, expected, ctx))];
}

function dependantsContext(scan: IndexScan): DependantsContext {
  // A backing path outside the walked tree: what it names now (nothing, when it cannot be
  // stat'ed: ENOENT, ENOTDIR, ELOOP; the agent runs as root, so EACCES does not hide a file).
  const statOf = memo((p: string): FileId | undefined => {
    try {
      return fileIdOf(statSync(p, { bigint: true }));
    } catch {
      return undefined;
    }
  });
  return { scan, statOf, mounts: lazy(readMountTable), refsOf: memoAsync(readImageRefs) };
}

/** One line per user, for a refusal message. */
export function describeUser(u: VolumeUser): string {
  switch (u.kind) {
    case 'backingOf':
      return `it is the backing file of ${u.image}${throughText(u.through)}`;
    case 'dataFileOf':
      return `it is the external data file of ${u.image}${throughText(u.through)}`;
    case 'unresolvedName':
      return `${u.image} holds a name this host cannot tie to a file, so it may use it: ${u.why}`;
    case 'openBy':
      return `process ${u.pid} (${u.process}) has it open`;
    case 'lockedBy':
      return u.pid === null
        ? `a process not visible here holds locks on it (${u.locks.join(', ')})`
        : `process ${u.pid}${u.process ? ` (${u.process})` : ''} holds locks on it (${u.locks.join(', ')})`;
    case 'unreadable':
      return `${u.path} could not be read (${u.error}), so it may use it`;
  }
}

function throughText(through: string[] | undefined): string {
  return through ? ` (through ${through.join(', ')})` : '';
}

/** The volume's real path (the walk sees real paths) and its inode, when it exists. */
function target(p: string): Target {
  const abs = path.resolve(p);
  try {
    const real = realpathSync(abs);
    return { path: real, id: fileIdOf(statSync(real, { bigint: true })) };
  } catch {
    try {
      return { path: path.join(realpathSync(path.dirname(abs)), path.basename(abs)), id: undefined };
    } catch {
      return { path: abs, id: undefined };
    }
  }
}

function lazy<T>(f: () => T): () => T {
  let v: { value: T } | undefined;
  return () => (v ??= { value: f() }).value;
}

async function mapInOrder<T, R>(items: readonly T[], f: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (const [i, item] of items.entries()) out.push(await f(item, i));
  return out;
}

function memoAsync<T>(f: (k: string) => Promise<T>): (k: string) => Promise<T> {
  const m = new Map<string, Promise<T>>();
  return (k) => {
    let v = m.get(k);
    if (!v) m.set(k, (v = f(k)));
    return v;
  };
}

function memo<T>(f: (k: string) => T): (k: string) => T {
  const m = new Map<string, T>();
  return (k) => {
    if (!m.has(k)) m.set(k, f(k));
    return m.get(k) as T;
  };
}

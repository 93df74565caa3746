import { type BigIntStats, type Dirent, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

import { CorruptImageHeaderError, type ImageRefs, readImageRefs } from '../storage/qemu-img';
import { type FileId, fileIdOf } from './file-id';
import { isReclaimName } from './reclaim-name';

/** A regular file under the storage root, with the names its header holds. */
export interface ImageRecord {
  path: string;
  id: FileId;
  /** The backing and data file names as written (see image-names.ts for what QEMU opens). */
  refs?: ImageRefs;
  /** Why the header could not be read: the file might name anything, so a guard must refuse. */
  unreadable?: string;
}

export interface IndexScan {
  /** Every regular file (and symlink to one) under the root, by path. */
  files: Map<string, ImageRecord>;
  /** Directories that could not be listed: their files are unseen, so a guard must refuse. */
  unreadableDirs: { path: string; error: string }[];
  dirs: number;
  headersRead: number;
  reclaimSkipped: number;
  ms: number;
}

interface CacheEntry {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  refs: ImageRefs | undefined;
}

export interface ImageIndexOptions {
  /**
   * A cached header is trusted only if the file's mtime and ctime were older than this when it
   * was stat'ed (the "racy git" rule): a write in the same timestamp tick as the stat would leave
   * both unchanged. 2 s covers coarse (1-2 s) file systems and a little clock skew to an NFS server.
   */
  racyMarginMs?: number;
  /** Header reads in flight at once (a cold index, or many changed files). */
  headerConcurrency?: number;
}

/** Whether the file is still the one whose header was parsed (compared field by field: no strings). */
const unchanged = (c: CacheEntry, st: BigIntStats): boolean =>
  c.ino === st.ino && c.mtimeNs === st.mtimeNs && c.ctimeNs === st.ctimeNs && c.size === st.size && c.dev === st.dev;

/**
 * The images of the whole storage root and the names their headers hold, kept by the host agent.
 *
 * Every scan walks the whole tree again (readdir of every directory, stat of every file), so a new,
 * renamed or replaced file is always seen. Only the header parse is cached, per path, under the
 * key (dev, ino, size, mtimeNs, ctimeNs): a header rewrite (`qemu-img rebase`, QEMU's own rewrite
 * after a commit) is a write, which sets mtime and ctime; a file replaced by another (rename over,
 * copy) has another inode or ctime; and ctime cannot be set back from user space (utimes sets it
 * to now). An entry whose timestamps were within `racyMarginMs` of its stat is not kept, so a
 * write in the same tick is never hidden. A stale entry therefore cannot survive to the next scan.
 * Directory mtimes are not used to skip listings: a listing is cheap (see bench/guard.ts), and the
 * files inside must be stat'ed anyway.
 */
export class ImageIndex {
  private readonly cache = new Map<string, CacheEntry>();
  private readonly racyMarginNs: bigint;
  private readonly concurrency: number;

  constructor(
    readonly root: string,
    opts: ImageIndexOptions = {},
  ) {
    this.racyMarginNs = BigInt(opts.racyMarginMs ?? 2_000) * 1_000_000n;
    this.concurrency = opts.headerConcurrency ?? 16;
  }

  /** How many parsed headers are cached (for tests and the benchmark). */
  get size(): number {
    return this.cache.size;
  }

  async scan(): Promise<IndexScan> {
    const t0 = performance.now();
    const startNs = BigInt(Date.now()) * 1_000_000n;
    const files = new Map<string, ImageRecord>();
    const unreadableDirs: IndexScan['unreadableDirs'] = [];
    const toRead: { record: ImageRecord; st: BigIntStats }[] = [];
    const seenDirs = new Set<string>();
    let dirs = 0;
    let reclaimSkipped = 0;

    const stack = [this.root];
    while (stack.length > 0) {
      const dir = stack.pop() as string;
      let entries: Dirent[];
      try {
        const dst = statSync(dir, { bigint: true });
        const dirKey = `${dst.dev}:${dst.ino}`;
        if (seenDirs.has(dirKey)) continue; // the same directory again (a bind mount inside the root)
        seenDirs.add(dirKey);
        entries = readdirSync(dir, { withFileTypes: true });
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'ENOENT' && code !== 'ENOTDIR') unreadableDirs.push({ path: dir, error: String(err) });
        continue;
      }
      dirs++;
      if (dirs % 16 === 0) await new Promise((r) => setImmediate(r)); // let heartbeats (and the /proc/locks read) through
      for (const e of entries) {
        const file = path.join(dir, e.name);
        if (e.isDirectory()) {
          stack.push(file);
          continue;
        }
        if (isReclaimName(e.name)) {
          reclaimSkipped++;
          continue;
        }
        // Every other entry is stat'ed, through a symlink: a file system that reports no entry types
        // (DT_UNKNOWN) lists its directories here too. A symlink to a directory is not walked (no
        // loops); a symlinked image is recorded under the link's path, whose directory QEMU
        // resolves a relative backing name against when it opens the image by that link.
        let st: BigIntStats;
        try {
          st = statSync(file, { bigint: true });
        } catch {
          continue; // gone meanwhile, or a dangling or looping symlink: not an image
        }
        if (st.isDirectory()) {
          if (!e.isSymbolicLink()) stack.push(file);
          continue;
        }
        if (!st.isFile()) continue; // fifo, socket, device
        const record: ImageRecord = { path: file, id: fileIdOf(st) };
        const cached = this.cache.get(file);
        if (cached && unchanged(cached, st)) {
          record.refs = cached.refs;
        } else {
          toRead.push({ record, st });
        }
        files.set(file, record);
      }
    }

    await mapLimit(toRead, this.concurrency, async ({ record, st }) => {
      try {
        const refs = await readImageRefs(record.path);
        record.refs = refs;
        const newest = st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs;
        if (startNs - newest > this.racyMarginNs)
          this.cache.set(record.path, {
            dev: st.dev,
            ino: st.ino,
            size: st.size,
            mtimeNs: st.mtimeNs,
            ctimeNs: st.ctimeNs,
            refs,
          });
        else this.cache.delete(record.path);
      } catch (err) {
        this.cache.delete(record.path);
        if ((err as NodeJS.ErrnoException).code === 'ENOENT')
          files.delete(record.path); // gone since the stat
        else record.unreadable = err instanceof CorruptImageHeaderError ? err.message : String(err);
      }
    });
    for (const p of this.cache.keys()) if (!files.has(p)) this.cache.delete(p);
    return { files, unreadableDirs, dirs, headersRead: toRead.length, reclaimSkipped, ms: performance.now() - t0 };
  }
}

async function mapLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

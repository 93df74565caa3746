import { promises as fs } from 'node:fs';
import * as path from 'node:path';

/** How long a failed unlink waits before the next try (the file is already out of its name). */
const RETRY_AFTER_MS = 60_000;
const RECLAIM_SUFFIX = '.reclaim';

/**
 * The name a deleted volume's file has until its space is reclaimed: hidden and not `*.qcow2`, so
 * no chain scan, backing-file scan or volume lookup ever sees it again.
 */
export function reclaimPath(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}${RECLAIM_SUFFIX}`);
}

function isReclaimName(name: string): boolean {
  return name.startsWith('.') && name.endsWith(`.qcow2${RECLAIM_SUFFIX}`);
}

export interface ReclaimLog {
  warn(message: string, attrs: Record<string, unknown>): void;
}

/**
 * Frees the space of deleted volumes after their delete step has ended. A delete renames the file
 * to its reclaim name, one atomic step that takes it out of every lookup, and the unlink, which on
 * storage that discards freed blocks costs about 180 ms per GiB here, runs here in the background,
 * one file at a time. An agent that stops first leaves reclaim names behind; `sweep()`, run when
 * an agent starts, unlinks them, so no space leaks past a restart.
 */
export class Reclaimer {
  private queue: Promise<void> = Promise.resolve();
  private queued = new Set<string>();

  constructor(
    private readonly storageRoot: string,
    private readonly log: ReclaimLog = { warn: (m, a) => console.warn(m, a) },
  ) {}

  /**
   * Takes `file` out of its name and queues its unlink. False when there was no such file (a
   * repeated delete); the caller has made every check that the file may go.
   */
  async retire(file: string): Promise<boolean> {
    const trash = reclaimPath(file);
    try {
      await fs.rename(file, trash);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    this.enqueue(trash);
    return true;
  }

  /** Queues every reclaim name under the storage root; resolves to how many it found. */
  async sweep(): Promise<number> {
    const images = path.join(this.storageRoot, 'images');
    let disks: string[];
    try {
      disks = await fs.readdir(images);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw err;
    }
    let found = 0;
    for (const disk of disks) {
      let names: string[];
      try {
        names = await fs.readdir(path.join(images, disk));
      } catch {
        continue; // not a directory, or gone since the listing
      }
      for (const name of names.filter(isReclaimName)) {
        this.enqueue(path.join(images, disk, name));
        found++;
      }
    }
    return found;
  }

  /** Resolves once every queued unlink has been tried (an agent awaits it before it exits). */
  async drain(): Promise<void> {
    let seen: Promise<void> | undefined;
    while (seen !== this.queue) {
      seen = this.queue;
      await seen;
    }
  }

  private enqueue(trash: string): void {
    if (this.queued.has(trash)) return;
    this.queued.add(trash);
    this.queue = this.queue.then(async () => {
      try {
        await fs.unlink(trash);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
          this.log.warn('could not reclaim a deleted volume; will try again', { file: trash, error: String(err) });
          setTimeout(() => this.enqueue(trash), RETRY_AFTER_MS).unref();
        }
      } finally {
        this.queued.delete(trash);
      }
    });
  }
}

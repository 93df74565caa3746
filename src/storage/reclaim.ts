import { promises as fs } from 'node:fs';
import * as path from 'node:path';

/** How long after its delete step a volume's unlink starts. */
export const RECLAIM_DELAY_MS = 1_000;
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
 * to its reclaim name, one atomic step that takes it out of every lookup; the unlink follows in
 * the background, one file at a time, `delayMs` later. The delay keeps it out of the merge's own
 * last steps: on storage that discards freed blocks the unlink costs about 180 ms per GiB here,
 * and the disk's other writers (the Temporal server's database on a one-machine setup, the VM
 * anywhere) wait behind the discard. An agent that stops first leaves reclaim names behind;
 * `sweep()`, run when an agent starts, unlinks them, so no space leaks past a restart.
 */
export class Reclaimer {
  private queue: Promise<void> = Promise.resolve();
  private readonly pending = new Set<Promise<void>>();
  private readonly known = new Set<string>();

  constructor(
    private readonly storageRoot: string,
    private readonly log: ReclaimLog = { warn: (m, a) => console.warn(m, a) },
    private readonly delayMs = RECLAIM_DELAY_MS,
  ) {}

  /**
   * Takes `file` out of its name and schedules its unlink. False when there was no such file (a
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
    this.schedule(trash, this.delayMs);
    return true;
  }

  /** Schedules every reclaim name under the storage root at once; resolves to how many it found. */
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
        this.schedule(path.join(images, disk, name), 0);
        found++;
      }
    }
    return found;
  }

  /** Resolves once every scheduled unlink has been tried (an agent awaits it before it exits). */
  async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  private schedule(trash: string, delayMs: number): void {
    if (this.known.has(trash)) return;
    this.known.add(trash);
    const done = new Promise<void>((resolve) => setTimeout(resolve, delayMs))
      .then(() => (this.queue = this.queue.then(() => this.unlink(trash))))
      .finally(() => {
        this.known.delete(trash);
        this.pending.delete(done);
      });
    this.pending.add(done);
  }

  private async unlink(trash: string): Promise<void> {
    try {
      await fs.unlink(trash);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      this.log.warn('could not reclaim a deleted volume; will try again', { file: trash, error: String(err) });
      // Not awaited by drain(): a stopping agent leaves it to the next one's sweep.
      setTimeout(() => this.schedule(trash, 0), RETRY_AFTER_MS).unref();
    }
  }
}

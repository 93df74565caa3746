import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { z } from 'zod';

import { imageDir } from '../domain/layout';

/**
 * A tombstone records that a volume was merged into its base and deleted, so that a re-run of
 * the same merge (a retried step, or a new run after a partial failure) counts that disk as
 * already merged instead of failing on a volume it can no longer find.
 */
const tombstoneSchema = z.object({ volumeId: z.string(), mergedInto: z.string(), deletedAt: z.string() });
export type Tombstone = z.infer<typeof tombstoneSchema>;

function tombstonePath(storageRoot: string, diskId: string, volumeId: string): string {
  return path.join(imageDir(storageRoot, diskId), `.${volumeId}.merged.json`);
}

export async function writeTombstone(storageRoot: string, diskId: string, t: Tombstone): Promise<void> {
  const file = tombstonePath(storageRoot, diskId, t.volumeId);
  await fs.writeFile(`${file}.tmp`, JSON.stringify(t));
  await fs.rename(`${file}.tmp`, file);
}

/**
 * The tombstone of `volumeId`, or undefined when it has none. One that does not parse, or that
 * records another volume, is thrown: it cannot say that this volume was merged.
 */
export async function readTombstone(
  storageRoot: string,
  diskId: string,
  volumeId: string,
): Promise<Tombstone | undefined> {
  const file = tombstonePath(storageRoot, diskId, volumeId);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const t = tombstoneSchema.parse(JSON.parse(text));
  if (t.volumeId !== volumeId) throw new Error(`tombstone ${file} records volume ${t.volumeId}, not ${volumeId}`);
  return t;
}

import { z } from 'zod';

import { type HiddenRecordKind, readHiddenRecord, writeHiddenRecord } from './hidden-record';

/**
 * A tombstone records that a volume was merged into its base and deleted, so that a re-run of
 * the same merge (a retried step, or a new run after a partial failure) counts that disk as
 * already merged instead of failing on a volume it can no longer find.
 */
const tombstoneSchema = z.object({ volumeId: z.string(), mergedInto: z.string(), deletedAt: z.string() });
export type Tombstone = z.infer<typeof tombstoneSchema>;

const TOMBSTONE: HiddenRecordKind<Tombstone> = {
  what: 'tombstone',
  suffix: 'merged.json',
  schema: tombstoneSchema,
  volumeOf: (t) => t.volumeId,
};

export function writeTombstone(storageRoot: string, diskId: string, t: Tombstone): Promise<void> {
  return writeHiddenRecord(TOMBSTONE, storageRoot, diskId, t);
}

/** The tombstone of `volumeId`, or undefined when it has none (see readHiddenRecord). */
export function readTombstone(storageRoot: string, diskId: string, volumeId: string): Promise<Tombstone | undefined> {
  return readHiddenRecord(TOMBSTONE, storageRoot, diskId, volumeId);
}

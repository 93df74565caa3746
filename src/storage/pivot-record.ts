import { z } from 'zod';

import { type HiddenRecordKind, readHiddenRecord, removeHiddenRecord, writeHiddenRecord } from './hidden-record';

/**
 * The host's record of an active commit's pivot: written (and synced) before `block-job-complete`
 * is sent, confirmed once QEMU reports the job concluded. A VM that stops in between leaves a
 * record without confirmation, so the offline finish never commits a top the guest may have left.
 */
const pivotRecordSchema = z.object({
  topVolumeId: z.string(),
  requestedAt: z.string(),
  confirmedAt: z.string().optional(),
});
export type PivotRecord = z.infer<typeof pivotRecordSchema>;

const PIVOT_RECORD: HiddenRecordKind<PivotRecord> = {
  what: 'pivot record',
  suffix: 'pivot.json',
  schema: pivotRecordSchema,
  volumeOf: (r) => r.topVolumeId,
};

/** Records that the pivot of `topVolumeId` is about to be asked for; a record already there is kept. */
export async function recordPivotRequest(storageRoot: string, diskId: string, topVolumeId: string): Promise<void> {
  if (await readPivotRecord(storageRoot, diskId, topVolumeId)) return;
  await writeHiddenRecord(PIVOT_RECORD, storageRoot, diskId, { topVolumeId, requestedAt: new Date().toISOString() });
}

/**
 * Records that QEMU finished the pivot: the base is the disk's active volume from then on.
 * `record` is the one the caller has just read, if any.
 */
export async function confirmPivot(
  storageRoot: string,
  diskId: string,
  topVolumeId: string,
  record: PivotRecord | undefined,
): Promise<void> {
  if (record?.confirmedAt !== undefined) return;
  await writeHiddenRecord(PIVOT_RECORD, storageRoot, diskId, {
    topVolumeId,
    requestedAt: record?.requestedAt ?? new Date().toISOString(),
    confirmedAt: new Date().toISOString(),
  });
}

/** The record of `topVolumeId`'s pivot, or undefined when none was asked for (see readHiddenRecord). */
export function readPivotRecord(
  storageRoot: string,
  diskId: string,
  topVolumeId: string,
): Promise<PivotRecord | undefined> {
  return readHiddenRecord(PIVOT_RECORD, storageRoot, diskId, topVolumeId);
}

/** Removes the record once the top is deleted (its tombstone then tells what happened). */
export function removePivotRecord(storageRoot: string, diskId: string, topVolumeId: string): Promise<void> {
  return removeHiddenRecord(PIVOT_RECORD, storageRoot, diskId, topVolumeId);
}

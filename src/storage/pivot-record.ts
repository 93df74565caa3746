import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { z } from 'zod';

import { imageDir } from '../domain/layout';

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

function recordPath(storageRoot: string, diskId: string, topVolumeId: string): string {
  return path.join(imageDir(storageRoot, diskId), `.${topVolumeId}.pivot.json`);
}

/** Writes the record and syncs it and its directory: it must outlive a host that loses power. */
async function writeSynced(file: string, record: PivotRecord): Promise<void> {
  const tmp = `${file}.tmp`;
  const handle = await fs.open(tmp, 'w');
  try {
    await handle.writeFile(JSON.stringify(record));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, file);
  const dir = await fs.open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Records that the pivot of `topVolumeId` is about to be asked for; a record already there is kept. */
export async function recordPivotRequest(storageRoot: string, diskId: string, topVolumeId: string): Promise<void> {
  if (await readPivotRecord(storageRoot, diskId, topVolumeId)) return;
  await writeSynced(recordPath(storageRoot, diskId, topVolumeId), {
    topVolumeId,
    requestedAt: new Date().toISOString(),
  });
}

/** Records that QEMU finished the pivot: the base is the disk's active volume from then on. */
export async function confirmPivot(storageRoot: string, diskId: string, topVolumeId: string): Promise<void> {
  const record = await readPivotRecord(storageRoot, diskId, topVolumeId);
  if (record?.confirmedAt !== undefined) return;
  await writeSynced(recordPath(storageRoot, diskId, topVolumeId), {
    topVolumeId,
    requestedAt: record?.requestedAt ?? new Date().toISOString(),
    confirmedAt: new Date().toISOString(),
  });
}

/**
 * The record of `topVolumeId`'s pivot, or undefined when none was asked for. One that does not
 * parse, or names another volume, is thrown: it cannot say that no pivot was asked for.
 */
export async function readPivotRecord(
  storageRoot: string,
  diskId: string,
  topVolumeId: string,
): Promise<PivotRecord | undefined> {
  const file = recordPath(storageRoot, diskId, topVolumeId);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const record = pivotRecordSchema.parse(JSON.parse(text));
  if (record.topVolumeId !== topVolumeId)
    throw new Error(`pivot record ${file} is of volume ${record.topVolumeId}, not ${topVolumeId}`);
  return record;
}

/** Removes the record once the top is deleted (its tombstone then tells what happened). */
export async function removePivotRecord(storageRoot: string, diskId: string, topVolumeId: string): Promise<void> {
  await fs.rm(recordPath(storageRoot, diskId, topVolumeId), { force: true });
}

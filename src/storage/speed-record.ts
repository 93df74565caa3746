import { z } from 'zod';

import { type HiddenRecordKind, readHiddenRecord, removeHiddenRecord, writeHiddenRecord } from './hidden-record';

/**
 * The speed a `setBandwidth` update fixed for the job on a top: written before the job is told, so
 * an adaptive wait (activities/speed-control.ts), even one resumed on a restarted agent, stands
 * down for good and keeps the user's limit. The merge step removes it before it starts a new job.
 */
const speedRecordSchema = z.object({
  topVolumeId: z.string(),
  bytesPerSec: z.number().int().nonnegative(),
  fixedAt: z.string(),
});
export type SpeedRecord = z.infer<typeof speedRecordSchema>;

const SPEED_RECORD: HiddenRecordKind<SpeedRecord> = {
  what: 'speed record',
  suffix: 'speed.json',
  schema: speedRecordSchema,
  volumeOf: (r) => r.topVolumeId,
};

export async function recordFixedSpeed(
  storageRoot: string,
  diskId: string,
  topVolumeId: string,
  bytesPerSec: number,
): Promise<void> {
  await writeHiddenRecord(SPEED_RECORD, storageRoot, diskId, {
    topVolumeId,
    bytesPerSec,
    fixedAt: new Date().toISOString(),
  });
}

export function readFixedSpeed(
  storageRoot: string,
  diskId: string,
  topVolumeId: string,
): Promise<SpeedRecord | undefined> {
  return readHiddenRecord(SPEED_RECORD, storageRoot, diskId, topVolumeId);
}

export function removeFixedSpeed(storageRoot: string, diskId: string, topVolumeId: string): Promise<void> {
  return removeHiddenRecord(SPEED_RECORD, storageRoot, diskId, topVolumeId);
}

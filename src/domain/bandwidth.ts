import { z } from 'zod';

/**
 * The `setBandwidth` update of a LiveMergeWorkflow: a new speed limit for the merge's block jobs,
 * in bytes per second (0 is unlimited). Checked by the update's validator, so a bad value is
 * rejected before the update is accepted, and by the engine client before anything is sent.
 */
export const bandwidthRequestSchema = z
  .object({
    bytesPerSec: z
      .number({ message: 'must be a number of bytes per second' })
      .int('must be a whole number of bytes per second')
      .min(0, 'must not be negative (0 is unlimited)')
      .max(Number.MAX_SAFE_INTEGER, 'is too large'),
  })
  .strict();
export type BandwidthRequest = z.infer<typeof bandwidthRequestSchema>;

/**
 * What happened to one disk's block job:
 * - `set`: the running job took the new limit (`block-job-set-speed`);
 * - `atJobStart`: the job has not started yet; it gets the new limit once it runs;
 * - `notRunning`: the job has ended (or the disk needed none): nothing to change;
 * - `failed`: the host could not be asked; `reason` says why.
 */
export interface DiskBandwidth {
  diskId: string;
  applied: 'set' | 'atJobStart' | 'notRunning' | 'failed';
  /** QEMU's status of the job when it was asked. */
  jobStatus?: string;
  reason?: string;
}

export interface BandwidthSet {
  bytesPerSec: number;
  disks: DiskBandwidth[];
}

import { z } from 'zod';

import { topOfJob } from '../config/names';
import { COMMIT_KINDS } from '../domain/commit';
import { convergenceOptionsSchema } from '../domain/convergence';
import { failure } from '../domain/failures';
import { idSchema } from '../domain/input';
import { speedStartSchema } from '../domain/speed';

/** Activity inputs cross a process boundary: each is parsed again on the host. */

export const diskStepSchema = z
  .object({ vmId: idSchema, diskId: idSchema, baseVolumeId: idSchema, topVolumeId: idSchema })
  .strict();
export type DiskStep = z.infer<typeof diskStepSchema>;

export const mergeStepSchema = diskStepSchema
  .extend({
    bandwidthBytesPerSec: z.number().int().min(0),
    /** Set by merges that know the offline steps: a VM that does not run is merged offline, not refused. */
    allowOffline: z.literal(true).optional(),
    /** Set when the VM stopped mid-merge: the disk is finished offline, and a VM that runs again is refused (VmStarted). */
    offlineOnly: z.literal(true).optional(),
    /** With offlineOnly: the volume the live chain started from before the VM stopped. */
    liveActive: idSchema.optional(),
    /** The adaptive speed mode: the job starts careful while the guest does I/O, else unlimited. */
    adaptive: z.literal(true).optional(),
  })
  .strict();
export type MergeStep = z.infer<typeof mergeStepSchema>;

/** The verify and delete steps of an offline merge read a stopped VM's chain from its images. */
export const checkStepSchema = diskStepSchema.extend({ offline: z.literal(true).optional() }).strict();
export type CheckStep = z.infer<typeof checkStepSchema>;

export const offlineCommitStepSchema = diskStepSchema
  .extend({
    kind: z.enum(COMMIT_KINDS),
    bandwidthBytesPerSec: z.number().int().min(0),
    progressWorkflowId: z.string().min(1).optional(),
  })
  .strict();
export type OfflineCommitStep = z.infer<typeof offlineCommitStepSchema>;

export const offlineRelinkStepSchema = diskStepSchema.extend({ kind: z.enum(COMMIT_KINDS) }).strict();
export type OfflineRelinkStep = z.infer<typeof offlineRelinkStepSchema>;

export const waitStepSchema = z
  .object({
    vmId: idSchema,
    diskId: idSchema,
    jobId: z.string().min(1).max(160),
    pollIntervalMs: z.number().int().min(10),
    /** LiveMergeWorkflow that receives this disk's offset/len as `diskProgress` signals. */
    progressWorkflowId: z.string().min(1).optional(),
    /** Sent with each progress signal (the workflow does not signal the waiting phase itself). */
    commitKind: z.enum(COMMIT_KINDS).optional(),
    /** Absent in waits scheduled before convergence was watched: the defaults apply. */
    convergence: convergenceOptionsSchema.optional(),
    /** The adaptive speed mode (domain/speed.ts); absent in the fixed mode. */
    speed: z
      .object({
        latencyFactor: z.number().min(1.1).max(100),
        /** What the merge step saw as it started the job; absent when it adopted one. */
        start: speedStartSchema.optional(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type WaitStep = z.infer<typeof waitStepSchema>;

export const jobStepSchema = z.object({ vmId: idSchema, diskId: idSchema, jobId: z.string().min(1).max(160) }).strict();
export type JobStep = z.infer<typeof jobStepSchema>;

export const speedStepSchema = jobStepSchema
  .extend({ bytesPerSec: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) })
  .strict();
export type SpeedStep = z.infer<typeof speedStepSchema>;

/** The top volume of a step's job (its id names it): what the host's records of the job are named by. */
export function topOf(step: Pick<JobStep, 'diskId' | 'jobId'>): string {
  const top = idSchema.safeParse(topOfJob(step.diskId, step.jobId));
  if (!top.success)
    throw failure(
      'InvalidMergeInput',
      `invalid input: jobId: ${step.jobId} is not a commit job of disk ${step.diskId}`,
    );
  return top.data;
}

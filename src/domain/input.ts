import { z } from 'zod';

import { convergenceOptionsSchema, DEFAULT_CONVERGENCE } from './convergence';
import { DEFAULT_LATENCY_FACTOR, SPEED_MODES, type SpeedMode } from './speed';

/**
 * Ids become file names and QEMU job ids: letters, digits, `-` and `_` only, so no path
 * separator, no `..`, nothing a shell or QMP would read differently.
 */
export const idSchema = z
  .string()
  .min(1, 'must not be empty')
  .max(64, 'must be at most 64 characters')
  .regex(/^[A-Za-z0-9][A-Za-z0-9_-]*$/, 'must be letters, digits, "-" or "_", starting with a letter or digit');

export const diskSpecSchema = z
  .object({
    diskId: idSchema,
    baseVolumeId: idSchema,
    topVolumeId: idSchema,
  })
  .strict()
  .refine((d) => d.baseVolumeId !== d.topVolumeId, {
    message: 'topVolumeId must differ from baseVolumeId',
    path: ['topVolumeId'],
  });
export type DiskSpec = z.infer<typeof diskSpecSchema>;

export const DEFAULT_POLL_INTERVAL_MS = 500;

/**
 * A host queue nobody polls must not hang a merge: the first step, merge, must be picked up by the
 * host agent within this time. Later steps wait for the host however long it is away: its block
 * job runs on, and only the host can tell its end.
 */
export const DEFAULT_HOST_PICKUP_TIMEOUT_SECONDS = 120;

export const mergeOptionsSchema = z
  .object({
    /** How often the host polls QEMU's job list while a job runs. */
    pollIntervalMs: z.number().int().min(50).max(60_000).default(DEFAULT_POLL_INTERVAL_MS),
    /** Speed limit of each block job in bytes per second (0 is unlimited): the `fixed` mode's. */
    bandwidthBytesPerSec: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
    /**
     * `adaptive`: the host sets each job's speed from the guest's own I/O latency (domain/speed.ts);
     * `fixed`: the job runs at `bandwidthBytesPerSec`. Unset: fixed when a limit is given, else adaptive.
     */
    speedMode: z.enum(SPEED_MODES).optional(),
    /** Adaptive mode: the guest's request latency may rise to this many times its own before the job. */
    latencyFactor: z.number().min(1.1).max(100).default(DEFAULT_LATENCY_FACTOR),
    /** How long the host agent may take to pick up the first step before the disk fails. */
    hostPickupTimeoutSeconds: z.number().int().min(1).max(86_400).default(DEFAULT_HOST_PICKUP_TIMEOUT_SECONDS),
    /** What an active commit that does not converge (domain/convergence.ts) is noticed by, and what then. */
    convergence: convergenceOptionsSchema.prefault({}),
  })
  .strict()
  .refine((o) => o.speedMode !== 'adaptive' || o.bandwidthBytesPerSec === 0, {
    message: 'adaptive sets the speed itself: leave bandwidthBytesPerSec out, or choose speedMode fixed',
    path: ['speedMode'],
  });
export type MergeOptions = z.infer<typeof mergeOptionsSchema>;

export const liveMergeInputSchema = z
  .object({
    snapshotId: idSchema,
    vmId: idSchema,
    hostId: idSchema,
    disks: z
      .array(diskSpecSchema)
      .min(1, 'must name at least one disk')
      .max(64, 'must name at most 64 disks')
      .refine((ds) => new Set(ds.map((d) => d.diskId)).size === ds.length, 'must not name a disk twice'),
    options: mergeOptionsSchema.default({
      pollIntervalMs: DEFAULT_POLL_INTERVAL_MS,
      bandwidthBytesPerSec: 0,
      latencyFactor: DEFAULT_LATENCY_FACTOR,
      hostPickupTimeoutSeconds: DEFAULT_HOST_PICKUP_TIMEOUT_SECONDS,
      convergence: DEFAULT_CONVERGENCE,
    }),
  })
  .strict();
export type LiveMergeInput = z.infer<typeof liveMergeInputSchema>;
/** What a caller sends: options and their fields may be left out. */
export type LiveMergeRequest = z.input<typeof liveMergeInputSchema>;

/**
 * What LiveMergeWorkflow gives each DiskMergeWorkflow. The child checks it again: its type is on
 * the engine queue and can be started on its own (e.g. from the CLI), and a bad input must fail it
 * at once, naming the field, before any host is asked anything.
 */
export const diskMergeInputSchema = z
  .object({
    snapshotId: idSchema,
    vmId: idSchema,
    hostId: idSchema,
    disk: diskSpecSchema,
    options: mergeOptionsSchema.prefault({}),
    /** The LiveMergeWorkflow that shows this disk's progress. */
    parentWorkflowId: z.string().min(1).max(1000).optional(),
  })
  .strict();
export type DiskMergeInput = z.infer<typeof diskMergeInputSchema>;

/** The merge's speed mode: the one asked for, else fixed when a limit is given, else adaptive. */
export function speedModeOf(options: MergeOptions): SpeedMode {
  return options.speedMode ?? (options.bandwidthBytesPerSec > 0 ? 'fixed' : 'adaptive');
}

/** `disks.1.topVolumeId: must be ...; vmId: ...`: every problem, each with its field path. */
export function describeIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(input)'}: ${i.message}`).join('; ');
}

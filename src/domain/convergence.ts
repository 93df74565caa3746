import { z } from 'zod';

import type { DiskProgress } from './progress';

/**
 * Whether an active commit converges (DESIGN rule 11). QEMU copies the top into the base while the
 * guest keeps dirtying it: each guest write dirties a whole cluster, so a speed limit below the
 * guest's dirty rate never lets the job reach `ready`. What the job has left to copy, `len - offset`,
 * then stops shrinking. The block-job wait watches it and acts on the merge's convergence policy.
 *
 * The rule: a running job makes progress when its remaining bytes drop at least
 * `MIN_PROGRESS_BYTES` (1 MiB, or 1 % of the remaining if more) below the remaining of its last
 * progress. A job that made none for `windowSeconds` while `running` does not converge, since its
 * last progress. A job in any other status (created, paused, ready, ...) or with nothing left
 * restarts the window: only a running job that copies and loses the race is not converging.
 * Times are the host agent's wall clock (epoch ms), kept in the wait's heartbeat details so that
 * a wait resumed on a restarted agent goes on with the same window, and never repeats an action.
 */

export const CONVERGENCE_POLICIES = ['lift', 'fail', 'report'] as const;
export type ConvergencePolicy = (typeof CONVERGENCE_POLICIES)[number];

export const DEFAULT_CONVERGENCE_WINDOW_SECONDS = 60;
export const DEFAULT_CONVERGENCE_GRACE_SECONDS = 60;
export const DEFAULT_CONVERGENCE_POLICY: ConvergencePolicy = 'lift';

/**
 * Less than this is not progress, however long it took: the remaining bytes of a job that loses
 * the race still wobble (the guest's write rate varies, the job copies in chunks), and a wobble
 * must not restart the window. A job that copies 1 MiB net per window is not stalled.
 */
export const MIN_PROGRESS_BYTES = 1024 * 1024;

export const convergenceOptionsSchema = z
  .object({
    /** How long a running job's remaining bytes may fail to shrink before it counts as not converging. */
    windowSeconds: z.number().int().min(1).max(86_400).default(DEFAULT_CONVERGENCE_WINDOW_SECONDS),
    /**
     * What then: `lift` the job's speed limit (`block-job-set-speed 0`), `fail` the disk
     * (`NotConverging`: the job is cancelled, never pivoted, the chain stays as it was, the top is
     * kept), or only `report` it (progress query, watch, Web UI) and keep waiting.
     */
    policy: z.enum(CONVERGENCE_POLICIES).default(DEFAULT_CONVERGENCE_POLICY),
    /** How long after the detection the policy acts (a `setBandwidth` meanwhile may fix it). */
    graceSeconds: z.number().int().min(0).max(86_400).default(DEFAULT_CONVERGENCE_GRACE_SECONDS),
  })
  .strict();
export type ConvergenceOptions = z.infer<typeof convergenceOptionsSchema>;

export const DEFAULT_CONVERGENCE: ConvergenceOptions = {
  windowSeconds: DEFAULT_CONVERGENCE_WINDOW_SECONDS,
  policy: DEFAULT_CONVERGENCE_POLICY,
  graceSeconds: DEFAULT_CONVERGENCE_GRACE_SECONDS,
};

/** The detection's state, in the wait's heartbeat details (readable as such in the Web UI). */
export const convergenceStateSchema = z.object({
  /** False once the job has made no progress for a window; true otherwise. */
  converging: z.boolean(),
  /** `len - offset` at the last read. */
  remainingBytes: z.number(),
  /** The remaining bytes at the last progress, and when (epoch ms). */
  progressRemaining: z.number(),
  progressAt: z.number(),
  /** When the job was found not converging (epoch ms): the policy acts `graceSeconds` later. */
  detectedAt: z.number().optional(),
  /** When the policy lifted the speed limit (epoch ms): once per wait. */
  liftedAt: z.number().optional(),
});
export type ConvergenceState = z.infer<typeof convergenceStateSchema>;

export interface JobReading {
  status: string;
  offset: number;
  len: number;
}

/** The state after one more reading of the job at `now` (epoch ms). Pure. */
export function observeConvergence(
  previous: ConvergenceState | undefined,
  job: JobReading,
  now: number,
  windowSeconds: number,
): ConvergenceState {
  const remaining = Math.max(0, job.len - job.offset);
  const kept = previous?.liftedAt === undefined ? {} : { liftedAt: previous.liftedAt };
  const restart: ConvergenceState = {
    converging: true,
    remainingBytes: remaining,
    progressRemaining: remaining,
    progressAt: now,
    ...kept,
  };
  if (!previous || job.status !== 'running' || remaining === 0) return restart;
  const step = Math.max(MIN_PROGRESS_BYTES, previous.progressRemaining * 0.01);
  if (remaining <= previous.progressRemaining - step) return restart;
  const stalled = now - previous.progressAt >= windowSeconds * 1000;
  if (!stalled) return { ...previous, converging: true, remainingBytes: remaining, detectedAt: undefined };
  return { ...previous, converging: false, remainingBytes: remaining, detectedAt: previous.detectedAt ?? now };
}

/** Whether the policy's grace after the detection is over at `now`. */
export function graceOver(state: ConvergenceState, now: number, graceSeconds: number): boolean {
  return !state.converging && state.detectedAt !== undefined && now - state.detectedAt >= graceSeconds * 1000;
}

/** The convergence fields of a disk's progress (domain/progress.ts), from the wait's state. */
export function convergenceProgress(
  c: ConvergenceState,
): Pick<DiskProgress, 'converging' | 'remainingBytes' | 'notConvergingSince' | 'speedLiftedAt'> {
  return {
    converging: c.converging,
    remainingBytes: c.remainingBytes,
    ...(c.converging ? {} : { notConvergingSince: new Date(c.progressAt).toISOString() }),
    ...(c.liftedAt === undefined ? {} : { speedLiftedAt: new Date(c.liftedAt).toISOString() }),
  };
}

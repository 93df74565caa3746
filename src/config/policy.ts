import type { ActivityOptions, RetryPolicy } from '@temporalio/workflow';

/**
 * Timeouts and retry policies of every activity: the one place they are set. Retries are
 * unlimited where a step must not be lost (its outcome decides whether a volume is deleted);
 * errors that retrying cannot fix are named in NON_RETRYABLE and end the step at once.
 */

export const NON_RETRYABLE = [
  'InvalidMergeInput',
  'VmNotFound',
  'DiskNotFound',
  'VolumeNotInChain',
  'BaseNotBacking',
  'DiskBusy',
  'BlockJobFailed',
  'ChainVerificationFailed',
  'VolumeInUse',
  'PathOutsideStorageRoot',
  'VmGone',
] as const;
export type NonRetryableType = (typeof NON_RETRYABLE)[number];

/** A host queue nobody polls must not hang a merge: a bounded wait to be picked up. */
export const HOST_SCHEDULE_TO_START = '2 minutes';

const durableRetry: RetryPolicy = {
  initialInterval: '1 second',
  backoffCoefficient: 2,
  maximumInterval: '30 seconds',
  nonRetryableErrorTypes: [...NON_RETRYABLE],
};

/** Short host steps: read the chain, start the commit, verify, delete, clean up. */
export const hostStepOptions: ActivityOptions = {
  startToCloseTimeout: '1 minute',
  scheduleToStartTimeout: HOST_SCHEDULE_TO_START,
  retry: durableRetry,
};

/** Heartbeat timeout of the block-job wait: how soon a dead host agent is noticed. */
export const BLOCK_JOB_HEARTBEAT_TIMEOUT = '10 seconds';

/**
 * The wait for a block job may take hours; the heartbeat timeout, not the start-to-close timeout,
 * detects a dead agent, and the retry resumes from the heartbeat details. The start-to-close
 * bound is long so that the orchestrator never gives up on a job the host is still running.
 */
export const blockJobWaitOptions: ActivityOptions = {
  startToCloseTimeout: '7 days',
  scheduleToStartTimeout: HOST_SCHEDULE_TO_START,
  heartbeatTimeout: BLOCK_JOB_HEARTBEAT_TIMEOUT,
  retry: { ...durableRetry, initialInterval: '500 milliseconds', maximumInterval: '5 seconds' },
};

export const DEFAULT_POLL_INTERVAL_MS = 500;

/** How often a host agent sends heartbeats at most (each carries the job's offset/len). */
export const HEARTBEAT_THROTTLE = '1 second';

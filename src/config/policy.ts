import {
  ActivityCancellationType,
  type ActivityOptions,
  type LocalActivityOptions,
  type RetryPolicy,
} from '@temporalio/workflow';

import { NON_RETRYABLE_TYPES } from '../domain/failures';

/**
 * Timeouts and retry policies of every activity: the one place they are set. Retries are
 * unlimited where a step must not be lost (its outcome decides whether a volume is deleted);
 * errors that retrying cannot fix are the non-retryable types of domain/failures.ts and end the
 * step at once.
 */

const durableRetry: RetryPolicy = {
  initialInterval: '1 second',
  backoffCoefficient: 2,
  maximumInterval: '30 seconds',
  nonRetryableErrorTypes: [...NON_RETRYABLE_TYPES],
};

/** How soon a host agent that died mid-step is noticed: every host step heartbeats each second. */
export const HOST_HEARTBEAT_TIMEOUT = '5 seconds';

/**
 * A block-job wait heartbeats for as long as its job runs, and every heartbeat is a write on the
 * Temporal server: a host with hundreds of running jobs would otherwise send hundreds a second. So
 * a wait heartbeats every JOB_WAIT_HEARTBEAT_THROTTLE and a dead agent's waits are noticed within
 * JOB_WAIT_HEARTBEAT_TIMEOUT; the job runs on inside QEMU meanwhile, and the retry resumes it.
 */
export const JOB_WAIT_HEARTBEAT_TIMEOUT = '15 seconds';
/** Milliseconds (a Duration the worker options take as it is). */
export const JOB_WAIT_HEARTBEAT_THROTTLE = 5_000;

/**
 * How long the guard of a stopped VM's volumes waits for locks that no visible process holds to go
 * (a killed QEMU's, which the kernel drops after the process has exited; see volume-guard.ts), and
 * how often it looks meanwhile. Locks still there after it are refused.
 */
export const STOPPED_VM_LOCKS_SETTLE_MS = 5_000;
export const STOPPED_VM_LOCKS_POLL_MS = 100;

/**
 * Short host steps: merge, verify, delete, clean up, cancel. Each takes well under a second and
 * heartbeats while it runs; the heartbeat timeout catches a dead agent, the start-to-close
 * timeout only a hung one.
 */
export const hostStepOptions: ActivityOptions = {
  startToCloseTimeout: '5 minutes',
  heartbeatTimeout: HOST_HEARTBEAT_TIMEOUT,
  retry: durableRetry,
};

/**
 * The same short steps run as local activities, in the host agent that runs the disk's workflow
 * (merges since `disk-on-host`). A local activity cannot heartbeat: a host agent that dies mid-step
 * is noticed by the workflow task's timeout (10 s), and the step runs again on the next agent.
 */
export const localStepOptions: LocalActivityOptions = {
  startToCloseTimeout: '5 minutes',
  retry: durableRetry,
};

/**
 * The engine's own step (pickup.ts: which disks no host agent picked up): a few reads of the
 * server, retried until the server answers.
 */
export const engineStepOptions: ActivityOptions = {
  startToCloseTimeout: '30 seconds',
  retry: durableRetry,
};

/**
 * The merge step: a short host step with a bounded wait for the host to pick it up
 * (`options.hostPickupTimeoutSeconds`); a queue nobody polls fails the disk as HostUnreachable.
 */
export function mergeStepOptions(hostPickupTimeoutSeconds: number): ActivityOptions {
  return { ...hostStepOptions, scheduleToStartTimeout: hostPickupTimeoutSeconds * 1000 };
}

/**
 * The wait for a block job may take hours; the heartbeat timeout, not the start-to-close timeout,
 * detects a dead agent, and the retry resumes from the heartbeat details. The start-to-close
 * bound is long so that the orchestrator never gives up on a job the host is still running.
 */
export const blockJobWaitOptions: ActivityOptions = {
  startToCloseTimeout: '7 days',
  heartbeatTimeout: JOB_WAIT_HEARTBEAT_TIMEOUT,
  retry: { ...durableRetry, initialInterval: '500 milliseconds', maximumInterval: '5 seconds' },
  // A cancelled merge cancels the block job only once the wait has stopped: a wait still running
  // could otherwise pivot an active commit after the workflow decided not to.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
};

/**
 * The offline commit (`qemu-img commit` of a stopped VM's disk) runs as long as its data takes to
 * copy, on the host's step queue: heartbeats each second catch a dead agent (its qemu-img dies with
 * it), and the retry commits again. A cancel waits for qemu-img to be killed, so the cancelled
 * merge reports its chain only once nothing writes into it.
 */
export const offlineCommitOptions: ActivityOptions = {
  startToCloseTimeout: '7 days',
  heartbeatTimeout: HOST_HEARTBEAT_TIMEOUT,
  retry: durableRetry,
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
};

/**
 * How many block-job waits one host agent runs at once (its job-wait worker's activity slots).
 * A wait idles on QEMU's events and a poll timer, so a slot costs little memory and no CPU while
 * the job runs; the bound is set far above the jobs a host's storage can run at once. Past it,
 * further waits queue (they have no schedule-to-start bound, so none fails) while the host's short
 * steps keep their own slots on their own queue.
 */
export const HOST_JOB_WAIT_SLOTS = 2000;

/**
 * The workflow tasks one host agent holds at once (its disks' workflows): a task stays open while
 * its short steps run as local activities, which have slots of their own (HOST_STEP_SLOTS) and
 * queue for them inside the open task. So the bound is as high as the waits': a disk's workflow is
 * picked up at once however many steps are queued, and a busy host is never taken for unreachable.
 */
export const HOST_DISK_TASK_SLOTS = 2000;

/** The short steps' slots per host agent: each takes milliseconds, so the SDK's default suffices. */
export const HOST_STEP_SLOTS = 100;

/** How often a host agent sends heartbeats at most (each carries the job's offset/len). */
export const HEARTBEAT_THROTTLE = '1 second';

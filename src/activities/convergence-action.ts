import { Context, log } from '@temporalio/activity';

import { JOB_WAIT_HEARTBEAT_THROTTLE } from '../config/policy';
import type { Checkpoint } from '../domain/checkpoint';
import { type ConvergenceOptions, type ConvergenceState, graceOver } from '../domain/convergence';
import { failure } from '../domain/failures';
import { ask } from './ask';
import type { HostDeps } from './deps';
import type { WaitStep } from './inputs';

/**
 * How long the wait lets its last heartbeat reach the server before it cancels a job (policy fail):
 * the SDK holds a heartbeat back for up to the throttle interval of the waits' worker.
 */
export const HEARTBEAT_SETTLE_MS = JOB_WAIT_HEARTBEAT_THROTTLE + 100;

const MiB = 1024 * 1024;

/**
 * The merge's convergence policy, acted on once a job's grace is over (domain/convergence.ts):
 * `lift` sets the job's speed to unlimited (once per wait); `fail` records the verdict in the
 * heartbeat, then cancels the job (the wait then never pivots and fails as NotConverging);
 * `report` does nothing here. Never after a pivot was requested. Returns the checkpoint to go on
 * with, heartbeated already when it changed.
 */
export function createConvergenceAction(deps: HostDeps, step: WaitStep, policy: ConvergenceOptions) {
  let cancelSent = false;
  return async function actOnConvergence(
    checkpoint: Checkpoint,
    convergence: ConvergenceState,
    now: number,
  ): Promise<Checkpoint> {
    if (checkpoint.pivotRequested) return checkpoint;
    if (!checkpoint.cancelledNotConverging && !graceOver(convergence, now, policy.graceSeconds)) return checkpoint;
    const ctx = Context.current();
    if (policy.policy === 'lift' && convergence.liftedAt === undefined) {
      log.warn('lifting the speed limit of a block job that does not converge', { ...step });
      if (!(await ask('block-job-set-speed', step.jobId, () => deps.driver.setSpeed(step.vmId, step.jobId, 0))))
        return checkpoint;
      const lifted = { ...checkpoint, convergence: { ...convergence, liftedAt: now } };
      ctx.heartbeat(lifted);
      return lifted;
    }
    if (policy.policy !== 'fail' || cancelSent) return checkpoint;
    if (!checkpoint.cancelledNotConverging) {
      // Recorded first, and given the heartbeat throttle's time to reach the server: a wait
      // resumed after a crash right after the cancel still knows why the job ended.
      checkpoint = { ...checkpoint, cancelledNotConverging: true };
      ctx.heartbeat(checkpoint);
      await sleep(HEARTBEAT_SETTLE_MS);
    }
    log.warn('cancelling a block job that does not converge', { ...step, ...checkpoint.convergence });
    cancelSent = await ask('block-job-cancel', step.jobId, () => deps.driver.cancelJob(step.vmId, step.jobId));
    return checkpoint;
  };
}

/** The disk's failure once its job was cancelled for not converging. */
export function notConverging(step: WaitStep, checkpoint: Checkpoint, windowSeconds: number) {
  const c = checkpoint.convergence;
  const since = c ? ` since ${new Date(c.progressAt).toISOString()}` : '';
  const left = c ? `, ${(c.remainingBytes / MiB).toFixed(1)} MiB left to copy` : '';
  return failure(
    'NotConverging',
    `block job ${step.jobId} did not converge: no progress for ${windowSeconds} s${since}${left} (the guest dirties faster than the job copies); job cancelled without pivot, chain unchanged`,
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

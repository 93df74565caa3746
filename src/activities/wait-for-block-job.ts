import { Context, log } from '@temporalio/activity';

import { type Checkpoint, checkpointSchema } from '../domain/checkpoint';
import { DEFAULT_CONVERGENCE, observeConvergence } from '../domain/convergence';
import { findJob } from '../drivers/driver';
import { confirmPivot, readPivotRecord, recordPivotRequest } from '../storage/pivot-record';
import { ask } from './ask';
import { createProgressReporter } from './block-job-progress';
import { createConvergenceAction, notConverging } from './convergence-action';
import type { HostDeps } from './deps';
import { parseInput, translateHostErrors } from './host-step';
import { topOf, type WaitStep, waitStepSchema } from './inputs';
import { createSpeedControl } from './speed-control';

/**
 * `pivotRequested`: this wait asked for the pivot of an active commit (`block-job-complete`).
 * Histories recorded before the field was renamed carry it as `pivoted`; no workflow reads either.
 */
export type BlockJobEnd =
  /** QEMU reports the job concluded; `error` is set when it ended in error. */
  | { outcome: 'concluded'; error?: string; offset: number; len: number; pivotRequested: boolean }
  /** The job is not in QEMU's list (dismissed earlier): only the chain can tell what happened. */
  | { outcome: 'vanished'; pivotRequested: boolean };

/**
 * Waits for the disk's block job to end: polls QEMU's job list (a job status event wakes the
 * poll early), heartbeats offset/len, completes an active commit once it is `ready` (the pivot),
 * and returns when QEMU reports the job concluded. A vanished job is never read as success.
 * The pivot is recorded on the host before it is asked for, and confirmed once the job concluded
 * (storage/pivot-record.ts): a VM that stops in between leaves the record to tell the offline finish.
 *
 * Each turn also watches whether the job converges (domain/convergence.ts) and hands the verdict
 * to the convergence action (convergence-action.ts), sets an adaptive job's speed from the guest's
 * latency (speed-control.ts), and tells watchers of phase changes
 * (block-job-progress.ts). The state is in the heartbeat details, so a wait resumed on a
 * restarted agent keeps its convergence window, its action and its pivot.
 */
export function createWaitForBlockJob(deps: HostDeps) {
  return async function waitForBlockJob(input: WaitStep): Promise<BlockJobEnd> {
    const step = parseInput(waitStepSchema, input);
    const ctx = Context.current();
    const resumed = checkpointSchema.safeParse(ctx.info.heartbeatDetails);
    let checkpoint: Checkpoint = resumed.success
      ? resumed.data
      : { status: 'unknown', offset: 0, len: 0, pivotRequested: false };
    if (resumed.success) log.info('resuming block job wait', { ...step, ...checkpoint });
    const reporter = createProgressReporter(step);
    const policy = step.convergence ?? DEFAULT_CONVERGENCE;
    const actOnConvergence = createConvergenceAction(deps, step, policy);
    const speed = createSpeedControl(deps, step);
    // Asked in this attempt: a resumed wait asks again while the job is still ready (the last
    // attempt may have recorded the request and died before sending it; QEMU takes a second one).
    let asked = false;

    return translateHostErrors(async () => {
      for (;;) {
        // Armed before the job list is read: a change between the read and the wait (the job
        // turning ready while a progress signal is on its way, say) still wakes it at once. Its
        // errors (a VM gone) surface from the next read; leaving the turn disarms it.
        const turn = new AbortController();
        const timeoutMs = Math.max(
          10,
          Math.min(step.pollIntervalMs, reporter.untilAnnounce(), speed?.untilTick(checkpoint, Date.now()) ?? Infinity),
        );
        const changed = deps.driver.nextJobChange(step.vmId, timeoutMs, turn.signal).catch(() => undefined);
        try {
          const job = await findJob(deps.driver, step.vmId, step.jobId);
          if (!job) {
            if (checkpoint.cancelledNotConverging) throw notConverging(step, checkpoint, policy.windowSeconds);
            return { outcome: 'vanished', pivotRequested: checkpoint.pivotRequested };
          }

          const now = Date.now();
          // Once cancelled for not converging, the verdict stands (the job's end is no progress).
          const convergence =
            checkpoint.cancelledNotConverging && checkpoint.convergence
              ? checkpoint.convergence
              : observeConvergence(checkpoint.convergence, job, now, policy.windowSeconds);
          if (!convergence.converging && checkpoint.convergence?.converging !== false)
            log.warn('block job does not converge', { ...step, ...convergence, policy: policy.policy });
          checkpoint = { ...checkpoint, status: job.status, offset: job.offset, len: job.len, convergence };
          if (speed) checkpoint = await speed.tick(checkpoint, job, now);
          ctx.heartbeat(checkpoint);
          // The progress signal (a server round trip) goes out beside the pivot: telling watchers
          // must not hold up QEMU.
          const reported = reporter(job, convergence);

          if (job.status === 'concluded') {
            // The chain check waits for this result, not for watchers to be told (the signal
            // catches its own errors): the job's end reaches the workflow one round trip sooner.
            void reported;
            if (checkpoint.cancelledNotConverging) throw notConverging(step, checkpoint, policy.windowSeconds);
            if (job.error === undefined) await confirmIfAsked(deps, step, checkpoint.pivotRequested);
            return {
              outcome: 'concluded',
              error: job.error,
              offset: job.offset,
              len: job.len,
              pivotRequested: checkpoint.pivotRequested,
            };
          }
          // A completion QEMU did not take leaves `asked` unset: the next turn, still in `ready`, asks again.
          // A merge cancelled meanwhile must not pivot: the cancel ends the wait before it can.
          if (ctx.cancellationSignal.aborted) {
            await reported;
            await ctx.cancelled;
          }
          checkpoint = await actOnConvergence(checkpoint, convergence, now);
          // Never a pivot once the job was cancelled for not converging: the chain stays as it was.
          const pivotNow =
            job.status === 'ready' && job.offset === job.len && !asked && !checkpoint.cancelledNotConverging;
          if (pivotNow) {
            await recordPivotRequest(deps.storageRoot, step.diskId, topOf(step));
            checkpoint = { ...checkpoint, pivotRequested: true };
            ctx.heartbeat(checkpoint);
            asked = await pivot(deps, step, job.id);
          }
          await reported;
          if (pivotNow && asked) continue;
          // Wakes on the VM's next job event or after the poll interval; a cancel of this activity
          // (delivered through the heartbeat) rejects the race and ends the wait.
          await Promise.race([changed, ctx.cancelled]);
        } finally {
          turn.abort();
        }
      }
    });
  };
}

/**
 * Confirms the pivot of a job that concluded when one was asked for: by this wait, or by the last
 * attempt, whose request may not have reached its heartbeat (the host's record tells).
 */
async function confirmIfAsked(deps: HostDeps, step: WaitStep, requested: boolean): Promise<void> {
  const top = topOf(step);
  const record = await readPivotRecord(deps.storageRoot, step.diskId, top);
  if (requested || record !== undefined) await confirmPivot(deps.storageRoot, step.diskId, top, record);
}

async function pivot(deps: HostDeps, step: WaitStep, jobId: string): Promise<boolean> {
  log.info('pivoting active commit', { vmId: step.vmId, diskId: step.diskId, jobId });
  return ask('block-job-complete', jobId, () => deps.driver.completeJob(step.vmId, jobId));
}

import { Context, log } from '@temporalio/activity';

import { type Checkpoint, checkpointSchema } from '../domain/checkpoint';
import { phaseOfJob } from '../domain/phases';
import { type DiskProgress, diskProgressSignalName } from '../domain/progress';
import { type BlockJob, findJob } from '../host/driver';
import type { HostDeps } from './deps';
import { hostStep, parseInput } from './host-step';
import { type WaitStep, waitStepSchema } from './inputs';

export type BlockJobEnd =
  /** QEMU reports the job concluded; `error` is set when it ended in error. */
  | { outcome: 'concluded'; error?: string; offset: number; len: number; pivoted: boolean }
  /** The job is not in QEMU's list (dismissed earlier): only the chain can tell what happened. */
  | { outcome: 'vanished'; pivoted: boolean };

/**
 * Waits for the disk's block job to end: polls QEMU's job list (a job status event wakes the
 * poll early), heartbeats offset/len, completes an active commit once it is `ready` (the pivot),
 * and returns when QEMU reports the job concluded. A vanished job is never read as success.
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
    const reporter = progressReporter(step);

    return hostStep(async () => {
      for (;;) {
        // Armed before the job list is read: a change between the read and the wait (the job
        // turning ready while a progress signal is on its way, say) still wakes it at once. Its
        // errors (a VM gone) surface from the next read; leaving the turn disarms it.
        const turn = new AbortController();
        const timeoutMs = Math.max(10, Math.min(step.pollIntervalMs, reporter.untilAnnounce()));
        const changed = deps.driver.nextJobChange(step.vmId, timeoutMs, turn.signal).catch(() => undefined);
        try {
          const job = await findJob(deps.driver, step.vmId, step.jobId);
          if (!job) return { outcome: 'vanished', pivoted: checkpoint.pivotRequested };

          checkpoint = { ...checkpoint, status: job.status, offset: job.offset, len: job.len };
          ctx.heartbeat(checkpoint);
          // The progress signal (a server round trip) goes out beside the pivot: telling watchers
          // must not hold up QEMU.
          const reported = reporter(job);

          if (job.status === 'concluded') {
            // The chain check waits for this result, not for watchers to be told (the signal
            // catches its own errors): the job's end reaches the workflow one round trip sooner.
            void reported;
            return {
              outcome: 'concluded',
              error: job.error,
              offset: job.offset,
              len: job.len,
              pivoted: checkpoint.pivotRequested,
            };
          }
          // A completion QEMU did not take is not recorded: the next turn, still in `ready`, asks again.
          // A merge cancelled meanwhile must not pivot: the cancel ends the wait before it can.
          if (ctx.cancellationSignal.aborted) {
            await reported;
            await ctx.cancelled;
          }
          const pivoted =
            job.status === 'ready' &&
            job.offset === job.len &&
            !checkpoint.pivotRequested &&
            (await pivot(deps, step, job));
          await reported;
          if (pivoted) {
            checkpoint = { ...checkpoint, pivotRequested: true };
            ctx.heartbeat(checkpoint);
            continue;
          }
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

/** True when QEMU took the completion. */
async function pivot(deps: HostDeps, step: WaitStep, job: BlockJob): Promise<boolean> {
  log.info('pivoting active commit', { vmId: step.vmId, diskId: step.diskId, jobId: job.id });
  try {
    await deps.driver.completeJob(step.vmId, job.id);
    return true;
  } catch (err) {
    // Refused (or lost on the way): the job list read on the next turn tells whether the pivot goes
    // on (the job leaves `ready`) or must be asked for again (still `ready`).
    log.warn('block-job-complete refused', { jobId: job.id, error: String(err) });
    return false;
  }
}

/** A job is announced to the LiveMergeWorkflow once it has run this long: people watch long jobs. */
export const ANNOUNCE_AFTER_MS = 1000;

interface ProgressReporter {
  (job: BlockJob): Promise<void>;
  /** Milliseconds until a running job is due to be announced; Infinity once it was (or never is). */
  untilAnnounce(): number;
}

/**
 * Tells the LiveMergeWorkflow of the job's phase changes (waiting, pivoting, and a good end as
 * verifying), with the commit kind, status and offset/len. A job that ends within its first second
 * is not announced at all: each signal wakes the parent, and at a fleet's scale those wake-ups cost
 * throughput while nobody could have watched such a job. Only changes, so a disk's history has the
 * same number of events however long its job runs, and the parent wakes at most three times per
 * disk; the live offset/len in between is in this activity's heartbeat details (see
 * src/progress/read-progress.ts).
 */
function progressReporter(step: WaitStep): ProgressReporter {
  const since = Date.now();
  let lastPhase = '';
  const report = async (job: BlockJob): Promise<void> => {
    if (!step.progressWorkflowId) return;
    // A job that ended well hands over to the chain check (the workflow does not signal that phase).
    const phase = phaseOfJob(job.status, job.error);
    if (phase === lastPhase) return;
    if (lastPhase === '') {
      // Not announced yet: announce a job that has been running long enough, or not at all.
      const running =
        phase === 'waiting' && job.status !== 'created' && job.status !== 'undefined' && job.status !== 'concluded';
      if (!running || Date.now() - since < ANNOUNCE_AFTER_MS) return;
    } else if (phase === 'waiting') {
      // After the pivot the job passes through waiting and pending again: the parent keeps pivoting.
      return;
    }
    lastPhase = phase;
    const progress: DiskProgress = {
      diskId: step.diskId,
      phase,
      ...(step.commitKind === undefined ? {} : { commitKind: step.commitKind }),
      jobStatus: job.status,
      offset: job.offset,
      len: job.len,
    };
    try {
      await Context.current()
        .client.workflow.getHandle(step.progressWorkflowId)
        .signal(diskProgressSignalName, progress);
    } catch (err) {
      log.debug('progress signal not delivered', { error: String(err) });
    }
  };
  return Object.assign(report, {
    untilAnnounce: () =>
      !step.progressWorkflowId || lastPhase !== '' ? Infinity : Math.max(0, since + ANNOUNCE_AFTER_MS - Date.now()),
  });
}

import { Context, log } from '@temporalio/activity';

import { diskProgressSignalName } from '../config/names';
import { JOB_WAIT_HEARTBEAT_THROTTLE } from '../config/policy';
import { type Checkpoint, checkpointSchema } from '../domain/checkpoint';
import {
  convergenceProgress,
  type ConvergenceState,
  DEFAULT_CONVERGENCE,
  graceOver,
  observeConvergence,
} from '../domain/convergence';
import { failure } from '../domain/failures';
import { phaseOfJob } from '../domain/phases';
import type { DiskProgress } from '../domain/progress';
import { type BlockJob, findJob } from '../drivers/driver';
import type { HostDeps } from './deps';
import { parseInput, translateHostErrors } from './host-step';
import { type WaitStep, waitStepSchema } from './inputs';

export type BlockJobEnd =
  /** QEMU reports the job concluded; `error` is set when it ended in error. */
  | { outcome: 'concluded'; error?: string; offset: number; len: number; pivoted: boolean }
  /** The job is not in QEMU's list (dismissed earlier): only the chain can tell what happened. */
  | { outcome: 'vanished'; pivoted: boolean };

/**
 * How long the wait lets its last heartbeat reach the server before it cancels a job (policy fail):
 * the SDK holds a heartbeat back for up to the throttle interval of the waits' worker.
 */
export const HEARTBEAT_SETTLE_MS = JOB_WAIT_HEARTBEAT_THROTTLE + 100;

/**
 * Waits for the disk's block job to end: polls QEMU's job list (a job status event wakes the
 * poll early), heartbeats offset/len, completes an active commit once it is `ready` (the pivot),
 * and returns when QEMU reports the job concluded. A vanished job is never read as success.
 *
 * It also watches whether the job converges (domain/convergence.ts) and acts on the merge's policy
 * once the grace is over: `lift` sets the job's speed to unlimited (once per wait), `fail` cancels
 * the job, never pivots it, waits for its end and fails as NotConverging. The detection state is
 * in the heartbeat details, so a wait resumed on a restarted agent keeps its window and its action.
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
    const policy = step.convergence ?? DEFAULT_CONVERGENCE;
    let cancelSent = false;

    return translateHostErrors(async () => {
      for (;;) {
        // Armed before the job list is read: a change between the read and the wait (the job
        // turning ready while a progress signal is on its way, say) still wakes it at once. Its
        // errors (a VM gone) surface from the next read; leaving the turn disarms it.
        const turn = new AbortController();
        const timeoutMs = Math.max(10, Math.min(step.pollIntervalMs, reporter.untilAnnounce()));
        const changed = deps.driver.nextJobChange(step.vmId, timeoutMs, turn.signal).catch(() => undefined);
        try {
          const job = await findJob(deps.driver, step.vmId, step.jobId);
          if (!job) {
            if (checkpoint.cancelledNotConverging) throw notConverging(step, checkpoint, policy.windowSeconds);
            return { outcome: 'vanished', pivoted: checkpoint.pivotRequested };
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
          ctx.heartbeat(checkpoint);
          // The progress signal (a server round trip) goes out beside the pivot: telling watchers
          // must not hold up QEMU.
          const reported = reporter(job, convergence);

          if (job.status === 'concluded') {
            // The chain check waits for this result, not for watchers to be told (the signal
            // catches its own errors): the job's end reaches the workflow one round trip sooner.
            void reported;
            if (checkpoint.cancelledNotConverging) throw notConverging(step, checkpoint, policy.windowSeconds);
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
          if (
            !checkpoint.pivotRequested &&
            (checkpoint.cancelledNotConverging || graceOver(convergence, now, policy.graceSeconds))
          ) {
            if (policy.policy === 'lift' && convergence.liftedAt === undefined) {
              log.warn('lifting the speed limit of a block job that does not converge', { ...step });
              if (await ask('block-job-set-speed', step.jobId, () => deps.driver.setSpeed(step.vmId, step.jobId, 0))) {
                checkpoint = { ...checkpoint, convergence: { ...convergence, liftedAt: now } };
                ctx.heartbeat(checkpoint);
              }
            } else if (policy.policy === 'fail' && !cancelSent) {
              if (!checkpoint.cancelledNotConverging) {
                // Recorded first, and given the heartbeat throttle's time to reach the server: a wait
                // resumed after a crash right after the cancel still knows why the job ended.
                checkpoint = { ...checkpoint, cancelledNotConverging: true };
                ctx.heartbeat(checkpoint);
                await sleep(HEARTBEAT_SETTLE_MS);
              }
              log.warn('cancelling a block job that does not converge', { ...step, ...checkpoint.convergence });
              cancelSent = await ask('block-job-cancel', step.jobId, () =>
                deps.driver.cancelJob(step.vmId, step.jobId),
              );
            }
          }
          // Never a pivot once the job was cancelled for not converging: the chain stays as it was.
          const pivoted =
            job.status === 'ready' &&
            job.offset === job.len &&
            !checkpoint.pivotRequested &&
            !checkpoint.cancelledNotConverging &&
            (await pivot(deps, step, job.id));
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const MiB = 1024 * 1024;

function notConverging(step: WaitStep, checkpoint: Checkpoint, windowSeconds: number) {
  const c = checkpoint.convergence;
  const since = c ? ` since ${new Date(c.progressAt).toISOString()}` : '';
  const left = c ? `, ${(c.remainingBytes / MiB).toFixed(1)} MiB left to copy` : '';
  return failure(
    'NotConverging',
    `block job ${step.jobId} did not converge: no progress for ${windowSeconds} s${since}${left} (the guest dirties faster than the job copies); job cancelled without pivot, chain unchanged`,
  );
}

/**
 * Asks QEMU for one thing about the job; true when QEMU took it. A refusal (or a request lost on
 * the way) is logged and false: the job list read on the next turn tells whether to ask again.
 */
async function ask(what: string, jobId: string, request: () => Promise<void>): Promise<boolean> {
  try {
    await request();
    return true;
  } catch (err) {
    log.warn(`${what} refused`, { jobId, error: String(err) });
    return false;
  }
}

async function pivot(deps: HostDeps, step: WaitStep, jobId: string): Promise<boolean> {
  log.info('pivoting active commit', { vmId: step.vmId, diskId: step.diskId, jobId });
  return ask('block-job-complete', jobId, () => deps.driver.completeJob(step.vmId, jobId));
}

// Stryker disable all: progress for people watching, no safety check; tested against a real server in test/workflow
/** A job is announced to the LiveMergeWorkflow once it has run this long: people watch long jobs. */
export const ANNOUNCE_AFTER_MS = 1000;

interface ProgressReporter {
  (job: BlockJob, convergence?: ConvergenceState): Promise<void>;
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
  let lastConvergence = '';
  const report = async (job: BlockJob, convergence?: ConvergenceState): Promise<void> => {
    if (!step.progressWorkflowId) return;
    // A job that ended well hands over to the chain check (the workflow does not signal that phase).
    const phase = phaseOfJob(job.status, job.error);
    // A change of convergence (found not converging, converging again, speed lifted) is news too.
    const convergenceKey = convergence ? `${convergence.converging}|${convergence.liftedAt ?? ''}` : '';
    const convergenceNews = convergenceKey !== lastConvergence && (lastConvergence !== '' || !convergence?.converging);
    if (phase === lastPhase && !convergenceNews) return;
    if (lastPhase === '') {
      // Not announced yet: announce a job that has been running long enough, or not at all.
      const running =
        phase === 'waiting' && job.status !== 'created' && job.status !== 'undefined' && job.status !== 'concluded';
      if (!running || Date.now() - since < ANNOUNCE_AFTER_MS) return;
    } else if (phase === 'waiting' && lastPhase !== 'waiting') {
      // After the pivot the job passes through waiting and pending again: the parent keeps pivoting.
      return;
    }
    lastPhase = phase;
    lastConvergence = convergenceKey;
    const progress: DiskProgress = {
      diskId: step.diskId,
      phase,
      ...(step.commitKind === undefined ? {} : { commitKind: step.commitKind }),
      jobStatus: job.status,
      offset: job.offset,
      len: job.len,
      ...(convergence ? convergenceProgress(convergence) : {}),
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
// Stryker restore all

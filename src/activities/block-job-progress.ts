import { Context, log } from '@temporalio/activity';

import { diskProgressSignalName } from '../config/names';
import { convergenceProgress, type ConvergenceState } from '../domain/convergence';
import { phaseOfJob } from '../domain/phases';
import type { DiskProgress } from '../domain/progress';
import type { BlockJob } from '../drivers/driver';
import type { WaitStep } from './inputs';

// Stryker disable all: progress for people watching, no safety check; tested against a real server in test/workflow
/** A job is announced to the LiveMergeWorkflow once it has run this long: people watch long jobs. */
export const ANNOUNCE_AFTER_MS = 1000;

export interface ProgressReporter {
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
export function createProgressReporter(step: WaitStep): ProgressReporter {
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

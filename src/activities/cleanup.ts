import { log } from '@temporalio/activity';

import { findJob } from '../drivers/driver';
import type { HostDeps } from './deps';
import { isVmAbsent, parseInput } from './host-step';
import { type JobStep, jobStepSchema } from './inputs';

export interface CleanedUp {
  dismissedJob: boolean;
}

/**
 * Dismisses the disk's concluded block job (kept by `auto-dismiss: false` so its outcome could be
 * read after any restart). A VM that is gone leaves nothing to clean.
 */
export function createCleanup(deps: HostDeps) {
  return async function cleanup(input: JobStep): Promise<CleanedUp> {
    const step = parseInput(jobStepSchema, input);
    try {
      const job = await findJob(deps.driver, step.vmId, step.jobId);
      if (!job || job.status !== 'concluded') return { dismissedJob: false };
      await deps.driver.dismissJob(step.vmId, step.jobId);
      log.info('block job dismissed', { vmId: step.vmId, diskId: step.diskId, jobId: step.jobId });
      return { dismissedJob: true };
    } catch (err) {
      if (isVmAbsent(err)) return { dismissedJob: false };
      throw err;
    }
  };
}

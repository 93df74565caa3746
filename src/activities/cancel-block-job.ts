import { Context, log } from '@temporalio/activity';

import { findJob } from '../drivers/driver';
import type { HostDeps } from './deps';
import { isVmAbsent, parseInput } from './host-step';
import { type JobStep, jobStepSchema } from './inputs';

export interface JobCancelled {
  /** The job's last state: absent when QEMU had no such job. */
  finalStatus?: string;
}

/**
 * Cancels the disk's block job and waits until QEMU reports it concluded. In `ready` a cancel
 * ends an active commit without a pivot: the VM keeps writing to the top.
 */
export function createCancelBlockJob(deps: HostDeps) {
  return async function cancelBlockJob(input: JobStep): Promise<JobCancelled> {
    const step = parseInput(jobStepSchema, input);
    const ctx = Context.current();
    try {
      let asked = false;
      for (;;) {
        const job = await findJob(deps.driver, step.vmId, step.jobId);
        ctx.heartbeat(job?.status);
        if (!job || job.status === 'concluded') return { finalStatus: job?.status };
        if (!asked) {
          log.info('cancelling block job', { ...step, status: job.status });
          await deps.driver.cancelJob(step.vmId, step.jobId);
          asked = true;
        }
        await deps.driver.nextJobChange(step.vmId, 200);
      }
    } catch (err) {
      if (isVmAbsent(err)) return {};
      throw err;
    }
  };
}

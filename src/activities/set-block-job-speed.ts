import { log } from '@temporalio/activity';

import { type BlockJob, findJob, type JobStatus } from '../drivers/driver';
import { recordFixedSpeed } from '../storage/speed-record';
import type { HostDeps } from './deps';
import { isVmAbsent, parseInput, translateHostErrors } from './host-step';
import { type SpeedStep, speedStepSchema, topOf } from './inputs';

export interface BlockJobSpeedSet {
  /** True when QEMU took the new speed; false when the job does not run (any more). */
  applied: boolean;
  /** The job's status when asked: absent when QEMU has no such job. */
  jobStatus?: JobStatus;
}

/** The states in which QEMU accepts `block-job-set-speed`; after them the job copies nothing more. */
const SPEED_SETTABLE: ReadonlySet<JobStatus> = new Set(['created', 'running', 'paused', 'ready', 'standby']);

/**
 * Changes the speed limit of the disk's running block job. Idempotent: setting the same speed
 * twice is harmless, and a job that has ended (or a VM that is gone) is no error, just not applied.
 * The limit is recorded on the host first: an adaptive job's controller stands down for it.
 */
export function createSetBlockJobSpeed(deps: HostDeps) {
  return async function setBlockJobSpeed(input: SpeedStep): Promise<BlockJobSpeedSet> {
    const step = parseInput(speedStepSchema, input);
    const find = async (): Promise<BlockJob | undefined> => findJob(deps.driver, step.vmId, step.jobId);
    return translateHostErrors(async () => {
      try {
        const job = await find();
        if (!job || !SPEED_SETTABLE.has(job.status)) return { applied: false, jobStatus: job?.status };
        await recordFixedSpeed(deps.storageRoot, step.diskId, topOf(step), step.bytesPerSec);
        try {
          await deps.driver.setSpeed(step.vmId, step.jobId, step.bytesPerSec);
        } catch (err) {
          // The job may have left the running states between the read and the command.
          const after = await find();
          if (!after || !SPEED_SETTABLE.has(after.status)) return { applied: false, jobStatus: after?.status };
          throw err;
        }
        log.info('block job speed set', { ...step, status: job.status });
        return { applied: true, jobStatus: job.status };
      } catch (err) {
        if (isVmAbsent(err)) return { applied: false };
        throw err;
      }
    });
  };
}

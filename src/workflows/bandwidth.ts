import { patched, proxyActivities, setHandler } from '@temporalio/workflow';

import type { HostActivities } from '../activities';
import { blockJobId, hostTaskQueue } from '../config/names';
import { hostStepOptions } from '../config/policy';
import type { BandwidthRequest, DiskBandwidth } from '../domain/bandwidth';
import type { LiveMergeInput } from '../domain/input';
import { type DiskPhase, jobState } from '../domain/phases';
import type { SpeedMode } from '../domain/speed';
import { setBandwidthUpdate } from './definitions';
import { parseWorkflowInput } from './failures';
import { schemas } from './schemas';

export interface BandwidthControl {
  /** The speed limit now in force, bytes per second (0 is unlimited). */
  current(): number;
  /** The merge's speed mode now: an update makes an adaptive merge fixed. */
  mode(): SpeedMode;
  /** Tells of a disk's phase change: a job that starts running gets a changed limit. */
  phaseChanged(diskId: string, from: DiskPhase, to: DiskPhase): void;
}

/**
 * The `setBandwidth` update of a LiveMergeWorkflow. The limit is kept here; every disk whose job
 * runs gets it at once (`block-job-set-speed` on the VM's host), and a disk whose job starts later
 * (started by its DiskMergeWorkflow with the input's limit) gets it when it reports its job running.
 * Per disk the changes are applied one after the other, each with the limit current when it runs,
 * so the last change wins whatever order the updates and the disk's reports come in. In the
 * adaptive mode an update fixes the speed: the host's controller stands down for it.
 */
export function installBandwidthControl(
  input: LiveMergeInput,
  phaseOf: (diskId: string) => DiskPhase | undefined,
): BandwidthControl {
  const host = proxyActivities<HostActivities>({ ...hostStepOptions, taskQueue: hostTaskQueue(input.hostId) });
  let bytesPerSec = input.options.bandwidthBytesPerSec;
  let updated = false;
  const adaptive = schemas().input.speedModeOf(input.options) === 'adaptive';
  const queue = new Map<string, Promise<unknown>>();
  const topOf = new Map(input.disks.map((d) => [d.diskId, d.topVolumeId]));

  function apply(diskId: string): Promise<DiskBandwidth> {
    const run = async (): Promise<DiskBandwidth> => {
      const phase = phaseOf(diskId) ?? 'pending';
      // A job not started yet starts with the input's speed, then gets the current one.
      if (jobState(phase) === 'notStarted') return { diskId, applied: 'atJobStart' };
      if (jobState(phase) !== 'running') return { diskId, applied: 'notRunning' };
      try {
        const jobId = blockJobId(diskId, topOf.get(diskId) ?? '');
        const set = await host.setBlockJobSpeed({ vmId: input.vmId, diskId, jobId, bytesPerSec });
        return { diskId, applied: set.applied ? 'set' : 'notRunning', jobStatus: set.jobStatus };
      } catch (err) {
        return {
          diskId,
          applied: 'failed',
          reason: err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err),
        };
      }
    };
    const next = (queue.get(diskId) ?? Promise.resolve()).then(run);
    queue.set(diskId, next);
    return next;
  }

  setHandler(
    setBandwidthUpdate,
    async (request: BandwidthRequest) => {
      bytesPerSec = request.bytesPerSec;
      updated = true;
      const disks = await Promise.all(input.disks.map((d) => apply(d.diskId)));
      return { bytesPerSec: request.bytesPerSec, disks };
    },
    {
      validator: (request: BandwidthRequest) => {
        parseWorkflowInput(schemas().bandwidth.bandwidthRequestSchema, request, 'setBandwidth input');
      },
    },
  );

  return {
    current: () => bytesPerSec,
    mode: () => (adaptive && !updated ? 'adaptive' : 'fixed'),
    phaseChanged(diskId, from, to) {
      if (jobState(from) === 'running' || jobState(to) !== 'running') return;
      // An adaptive job gets even the input's limit (0) once an update fixed it; merges started
      // before the adaptive mode never ran one.
      const fixes =
        bytesPerSec !== input.options.bandwidthBytesPerSec || (updated && adaptive && patched('adaptive-speed'));
      if (fixes) void apply(diskId);
    },
  };
}

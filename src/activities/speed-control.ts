// Stryker disable all: sets a job's speed, never what is written or deleted; its decisions are domain/speed.ts, mutated in the domain set
import { Context, log } from '@temporalio/activity';

import { MERGE_METRICS } from '../config/metrics';
import type { Checkpoint } from '../domain/checkpoint';
import {
  ADAPTIVE_START_BYTES_PER_SEC,
  controlSpeed,
  type GuestIo,
  SPEED_TICK_MS,
  type SpeedState,
  startSpeed,
} from '../domain/speed';
import type { BlockJob } from '../drivers/driver';
import { readFixedSpeed } from '../storage/speed-record';
import { ask } from './ask';
import type { HostDeps } from './deps';
import { isVmAbsent } from './host-step';
import { topOf, type WaitStep } from './inputs';

export interface SpeedControl {
  /** Milliseconds until the controller's next tick is due. */
  untilTick(checkpoint: Checkpoint, now: number): number;
  /** One tick: reads the guest's counters and sets the job's speed (domain/speed.ts). */
  tick(checkpoint: Checkpoint, job: BlockJob, now: number): Promise<Checkpoint>;
}

/**
 * The adaptive speed of the wait's job, on the host agent: each tick reads the guest's I/O counters
 * on the disk and sets the speed the controller decides. Only a running job before its pivot is
 * controlled; a speed an update fixed (storage/speed-record.ts) or the convergence policy's lift
 * ends the control for good. The state goes into the wait's heartbeat with the checkpoint.
 */
export function createSpeedControl(deps: HostDeps, step: WaitStep): SpeedControl | undefined {
  const options = step.speed;
  if (!options) return undefined;
  const setSpeed = (bytesPerSec: number): Promise<boolean> =>
    ask('block-job-set-speed', step.jobId, () => deps.driver.setSpeed(step.vmId, step.jobId, bytesPerSec));
  const controlled = (c: Checkpoint, job: BlockJob): boolean =>
    job.status === 'running' &&
    !c.pivotRequested &&
    !c.cancelledNotConverging &&
    c.convergence?.liftedAt === undefined &&
    c.speed?.fixedBytesPerSec === undefined;

  /** When an adopted job's counters could not be read: the next try waits a tick, not a turn. */
  let unreadAt: number | undefined;

  async function first(job: BlockJob, now: number): Promise<SpeedState | undefined> {
    if (options?.start) return startSpeed(options.start);
    if (unreadAt !== undefined && now - unreadAt < SPEED_TICK_MS) return undefined;
    // An adopted job (its start not seen): careful, from the counters as they are now.
    const io = await readGuestIo(deps, step.vmId, step.diskId);
    if (!io) {
      unreadAt = now;
      return undefined;
    }
    const bytesPerSec = (await setSpeed(ADAPTIVE_START_BYTES_PER_SEC)) ? ADAPTIVE_START_BYTES_PER_SEC : 0;
    return { ...startSpeed({ io, at: now, bytesPerSec }), offset: job.offset };
  }

  return {
    untilTick(checkpoint, now) {
      const at = checkpoint.speed?.at ?? unreadAt;
      return at === undefined ? 0 : Math.max(0, at + SPEED_TICK_MS - now);
    },
    async tick(checkpoint, job, now) {
      if (!controlled(checkpoint, job)) return checkpoint;
      const state = checkpoint.speed ?? (await first(job, now));
      if (!state) return checkpoint;
      if (now - state.at < SPEED_TICK_MS) return { ...checkpoint, speed: state };
      const fixed = await readFixedSpeed(deps.storageRoot, step.diskId, topOf(step));
      if (fixed) {
        // Set again: a tick of this controller may have overwritten it just after the update.
        await setSpeed(fixed.bytesPerSec);
        log.info('adaptive speed stands down for a fixed limit', { ...step, bytesPerSec: fixed.bytesPerSec });
        count('fixed', fixed.bytesPerSec);
        return { ...checkpoint, speed: { ...state, fixedBytesPerSec: fixed.bytesPerSec } };
      }
      const io = await readGuestIo(deps, step.vmId, step.diskId);
      if (!io) return { ...checkpoint, speed: state };
      const next = controlSpeed(state, io, job.offset, now, options.latencyFactor);
      if (next.bytesPerSec === state.bytesPerSec) return { ...checkpoint, speed: next };
      if (!(await setSpeed(next.bytesPerSec)))
        return { ...checkpoint, speed: { ...next, bytesPerSec: state.bytesPerSec, changes: state.changes } };
      const direction = next.bytesPerSec === 0 ? 'unlimited' : next.bytesPerSec > state.bytesPerSec ? 'up' : 'down';
      log.info('adaptive speed changed', {
        ...step,
        direction,
        bytesPerSec: next.bytesPerSec,
        latencyMs: next.latencyMs,
        targetMs: next.targetMs,
      });
      count(direction, next.bytesPerSec);
      return { ...checkpoint, speed: next };
    },
  };

  function count(direction: string, bytesPerSec: number): void {
    const meter = Context.current().metricMeter;
    meter
      .createCounter(MERGE_METRICS.speedChanges, undefined, 'speed changes of adaptive block jobs')
      .add(1, { host_id: deps.hostId, direction });
    meter
      .createGauge(MERGE_METRICS.speed, 'int', 'By/s', 'speed of an adaptive block job (0 is unlimited)')
      .set(bytesPerSec, { host_id: deps.hostId, disk_id: step.diskId });
  }
}

/**
 * The guest's counters, or undefined when they cannot be read: the speed stays as it is then, and
 * a merge never fails for it. A VM that is gone is thrown, as by every other read.
 */
export async function readGuestIo(deps: HostDeps, vmId: string, diskId: string): Promise<GuestIo | undefined> {
  try {
    return await deps.driver.guestIo(vmId, diskId);
  } catch (err) {
    if (isVmAbsent(err)) throw err;
    log.warn("the guest's I/O counters could not be read: the speed stays", { vmId, diskId, error: String(err) });
    return undefined;
  }
}

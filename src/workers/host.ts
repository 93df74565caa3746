import { type NativeConnection, Runtime, Worker, type WorkerOptions } from '@temporalio/worker';

import { createHostActivities, type HostActivities } from '../activities';
import { hostJobTaskQueue, hostTaskQueue } from '../config/names';
import {
  HEARTBEAT_THROTTLE,
  HOST_DISK_TASK_SLOTS,
  HOST_JOB_WAIT_SLOTS,
  HOST_STEP_SLOTS,
  JOB_WAIT_HEARTBEAT_THROTTLE,
} from '../config/policy';
import { chooseDriver } from '../drivers/choose';
import type { HypervisorDriver } from '../drivers/driver';
import { Reclaimer } from '../storage/reclaim';
import { VolumeUsage } from '../volume-users';
import { WORKFLOW_BUNDLER_OPTIONS, workflowsPath } from './workflow-bundle';

export interface HostAgentOptions {
  hostId: string;
  storageRoot: string;
  runDir: string;
  /** Defaults to chooseDriver's default, QEMU over QMP; tests may wrap it. */
  driver?: HypervisorDriver;
  /** Lets a test wrap the real activities (to inject a crash after a step, say). */
  wrapActivities?: (activities: HostActivities) => HostActivities;
  /** The workflow code, bundled once (tests, benchmarks); by default bundled at start. */
  workflowBundle?: WorkerOptions['workflowBundle'];
}

export interface HostAgent {
  /** The short steps, on hostTaskQueue(hostId). */
  steps: Worker;
  /**
   * The disks' workflows and their block-job waits, on hostJobTaskQueue(hostId), with
   * HOST_JOB_WAIT_SLOTS slots for waits and HOST_STEP_SLOTS for the short steps (local activities).
   */
  jobWaits: Worker;
  workers: Worker[];
  /** Runs both workers until both have stopped. */
  run(): Promise<void>;
  /** Asks both workers to stop (run() then resolves once their running activities end). */
  shutdown(): void;
  driver: HypervisorDriver;
  reclaimer: Reclaimer;
  /** After the worker's run() has ended: finishes freeing deleted volumes, closes the driver. */
  close(): Promise<void>;
}

/**
 * The host role: runs the host activities on this host's own queue, so every step of a merge
 * runs where the VM runs. Frees the space of volumes an earlier agent deleted but did not get to
 * reclaim before it stopped.
 */
export async function createHostWorker(
  connection: NativeConnection,
  namespace: string,
  opts: HostAgentOptions,
  extra: Partial<WorkerOptions> = {},
): Promise<HostAgent> {
  const driver = opts.driver ?? chooseDriver({ runDir: opts.runDir });
  const logger = Runtime.instance().logger;
  const reclaimer = new Reclaimer(opts.storageRoot, { warn: (m, a) => logger.warn(m, { ...a, hostId: opts.hostId }) });
  const leftOver = await reclaimer.sweep();
  if (leftOver > 0)
    logger.info(`reclaiming ${leftOver} volume(s) deleted before the last stop`, { hostId: opts.hostId });
  const usage = new VolumeUsage(opts.storageRoot);
  const { hostId, storageRoot, runDir } = opts;
  const activities = createHostActivities({ hostId, storageRoot, runDir, driver, reclaimer, usage });
  const all = opts.wrapActivities ? opts.wrapActivities(activities) : activities;
  const common: Partial<WorkerOptions> = {
    // Heartbeats carry a running job's offset/len to progress readers: send them every second
    // (the default waits up to 80% of the heartbeat timeout). They add no history events.
    maxHeartbeatThrottleInterval: HEARTBEAT_THROTTLE,
    defaultHeartbeatThrottleInterval: HEARTBEAT_THROTTLE,
    // Every activity log line (beside the SDK's workflowId, activityType, attempt) and every
    // activity metric names this host.
    interceptors: {
      activity: [
        () => ({
          outbound: {
            getLogAttributes: (attrs, next) => {
              // The task token is a credential for completing the activity: not for logs.
              const { taskToken: _token, ...rest } = next({ ...attrs, hostId: opts.hostId });
              return rest;
            },
            getMetricTags: (tags, next) => next({ ...tags, host_id: opts.hostId }),
          },
        }),
      ],
    },
  };
  // Every activity stays on the steps' queue too: merges started before the waits had a queue of
  // their own still schedule their waits there.
  const steps = await Worker.create({
    connection,
    namespace,
    taskQueue: hostTaskQueue(opts.hostId),
    activities: all,
    maxConcurrentActivityTaskExecutions: HOST_STEP_SLOTS,
    ...common,
    ...extra,
  });
  const jobWaits = await Worker.create({
    connection,
    namespace,
    taskQueue: hostJobTaskQueue(opts.hostId),
    ...(opts.workflowBundle
      ? { workflowBundle: opts.workflowBundle }
      : {
          workflowsPath: workflowsPath(),
          bundlerOptions: { preloadModules: [...WORKFLOW_BUNDLER_OPTIONS.preloadModules] },
        }),
    // Every step: the short ones run here as local activities of the disks' workflows.
    activities: all,
    maxConcurrentActivityTaskExecutions: HOST_JOB_WAIT_SLOTS,
    maxConcurrentLocalActivityExecutions: HOST_STEP_SLOTS,
    maxConcurrentWorkflowTaskExecutions: HOST_DISK_TASK_SLOTS,
    // New disks arrive on the normal queue: as many pollers there as on the sticky one (the SDK's
    // 1 in 5 left a burst of new disks on a loaded host unpicked past a 5 s pickup timeout).
    maxConcurrentWorkflowTaskPolls: 10,
    nonStickyToStickyPollRatio: 1,
    ...common,
    maxHeartbeatThrottleInterval: JOB_WAIT_HEARTBEAT_THROTTLE,
    defaultHeartbeatThrottleInterval: JOB_WAIT_HEARTBEAT_THROTTLE,
    ...extra,
  });
  return {
    steps,
    jobWaits,
    workers: [steps, jobWaits],
    async run() {
      await Promise.all([steps.run(), jobWaits.run()]);
    },
    shutdown() {
      for (const w of [steps, jobWaits]) if (w.getState() === 'RUNNING') w.shutdown();
    },
    driver,
    reclaimer,
    async close() {
      await reclaimer.drain();
      usage.close();
      await driver.close();
    },
  };
}

import { type NativeConnection, Worker } from '@temporalio/worker';

import type { HostActivities } from '../../src/activities';
import { hostJobTaskQueue, hostTaskQueue } from '../../src/config/names';

/** Runs the workers while `fn` runs, then shuts them down and waits for them to stop. */
export async function withWorkers<T>(workers: Worker[], fn: () => Promise<T>): Promise<T> {
  const runs = workers.map((w) => w.run());
  try {
    return await fn();
  } finally {
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    await Promise.allSettled(runs);
  }
}

/**
 * A mocked host agent as the product runs one: the host's steps on its queue, its block-job waits
 * (when mocked) on the job queue.
 */
export async function mockHostWorkers(
  connection: NativeConnection,
  hostId: string,
  activities: Partial<Record<keyof HostActivities, (...args: never[]) => Promise<unknown>>>,
): Promise<Worker[]> {
  const steps = await Worker.create({ connection, taskQueue: hostTaskQueue(hostId), activities });
  if (!activities.waitForBlockJob) return [steps];
  const waits = { waitForBlockJob: activities.waitForBlockJob };
  return [steps, await Worker.create({ connection, taskQueue: hostJobTaskQueue(hostId), activities: waits })];
}

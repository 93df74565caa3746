import { type NativeConnection, Worker } from '@temporalio/worker';

import type { HostActivities } from '../../src/activities';
import { hostJobTaskQueue, hostTaskQueue } from '../../src/config/names';
import { workflowBundle } from './temporal';

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
 * A mocked host agent as the product runs one: the host's steps on its queue; the disks' workflows
 * (running the mocked steps as local activities) and their block-job waits on the job queue.
 */
export async function mockHostWorkers(
  connection: NativeConnection,
  hostId: string,
  activities: Partial<Record<keyof HostActivities, (...args: never[]) => Promise<unknown>>>,
): Promise<Worker[]> {
  const steps = await Worker.create({ connection, taskQueue: hostTaskQueue(hostId), activities });
  const disks = await Worker.create({
    connection,
    taskQueue: hostJobTaskQueue(hostId),
    workflowBundle: await workflowBundle(),
    activities,
  });
  return [steps, disks];
}

import { type NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';

import { engineActivities } from '../activities/pickup';
import { ENGINE_TASK_QUEUE } from '../config/names';
import { warnIfSearchAttributesMissing } from './search-attributes-check';
import { WORKFLOW_BUNDLER_OPTIONS, workflowsPath } from './workflow-bundle';

/**
 * The engine role: runs LiveMergeWorkflow (and the DiskMergeWorkflows merges recorded before
 * `disk-on-host` started here) on the engine queue, with its one step of its own (pickup.ts).
 */
export async function createEngineWorker(
  connection: NativeConnection,
  namespace: string,
  extra: Partial<WorkerOptions> = {},
): Promise<Worker> {
  await warnIfSearchAttributesMissing(connection, namespace);
  return Worker.create({
    connection,
    namespace,
    taskQueue: ENGINE_TASK_QUEUE,
    activities: engineActivities,
    ...(extra.workflowBundle
      ? {}
      : {
          workflowsPath: workflowsPath(),
          bundlerOptions: { preloadModules: [...WORKFLOW_BUNDLER_OPTIONS.preloadModules] },
        }),
    ...extra,
  });
}

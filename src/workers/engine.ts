import { type NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';

import { ENGINE_TASK_QUEUE } from '../config/names';
import { warnIfSearchAttributesMissing } from './search-attributes-check';
import { WORKFLOW_BUNDLER_OPTIONS, workflowsPath } from './workflow-bundle';

/** The engine role: runs LiveMergeWorkflow and DiskMergeWorkflow on the engine queue. */
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
    ...(extra.workflowBundle
      ? {}
      : {
          workflowsPath: workflowsPath(),
          bundlerOptions: { preloadModules: [...WORKFLOW_BUNDLER_OPTIONS.preloadModules] },
        }),
    ...extra,
  });
}

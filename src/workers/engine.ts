import { NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { ENGINE_TASK_QUEUE } from '../config/names';

/** The engine role: runs LiveMergeWorkflow and DiskMergeWorkflow on the engine queue. */
export async function createEngineWorker(
  connection: NativeConnection,
  namespace: string,
  extra: Partial<WorkerOptions> = {},
): Promise<Worker> {
  return Worker.create({
    connection,
    namespace,
    taskQueue: ENGINE_TASK_QUEUE,
    ...(extra.workflowBundle ? {} : { workflowsPath: require.resolve('../workflows') }),
    ...extra,
  });
}

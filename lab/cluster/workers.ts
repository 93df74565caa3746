import * as path from 'node:path';

import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';

import { type CertPair, type ClusterCerts, tlsEnv } from './certs';
import { inNetns } from './netns';
import { type ClusterProcess, startProcess, waitFor } from './process';

const repoRoot = path.resolve(__dirname, '../..');

export interface WorkerSpec {
  name: string;
  netns: string;
  /** The frontend as seen from `netns`. */
  address: string;
  namespace: string;
  certs: ClusterCerts;
  /** The client certificate the worker shows the frontend. */
  cert: CertPair;
  args: string[];
  env?: Record<string, string>;
  logFile: string;
  /** Resolves once this queue has a poller. */
  taskQueue: string;
  client: Client;
}

/**
 * Runs src/worker.ts in network namespace `netns` the way an operator runs it: its Temporal
 * connection from TEMPORAL_ADDRESS and the README's TEMPORAL_TLS_* variables. `node --import tsx`
 * keeps the worker in the spawned process itself, so its pid is the worker's.
 */
export async function startClusterWorker(spec: WorkerSpec): Promise<ClusterProcess> {
  const argv = inNetns(spec.netns, [process.execPath, '--import', 'tsx', path.join(repoRoot, 'src/worker.ts')]);
  const proc = startProcess(spec.name, [...argv, ...spec.args], {
    cwd: repoRoot,
    logFile: spec.logFile,
    env: {
      TEMPORAL_ADDRESS: spec.address,
      TEMPORAL_NAMESPACE: spec.namespace,
      ...tlsEnv(spec.certs, spec.cert),
      ...spec.env,
    },
  });
  try {
    await Promise.race([hasPoller(spec.client, spec.namespace, spec.taskQueue), proc.exited]);
  } catch (err) {
    await proc.kill();
    throw err;
  }
  return proc;
}

/**
 * Resolves once `taskQueue` has an activity or workflow poller. Errors count as "not yet": right
 * after start the frontend may not see matching in its ring ("Not enough hosts").
 */
export function hasPoller(client: Client, namespace: string, taskQueue: string, timeoutMs = 120_000): Promise<void> {
  const kinds = [
    temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
  ];
  return waitFor(
    `a poller on ${taskQueue}`,
    async () => {
      for (const taskQueueType of kinds) {
        const r = await client.workflowService.describeTaskQueue({
          namespace,
          taskQueue: { name: taskQueue },
          taskQueueType,
        });
        if ((r.pollers?.length ?? 0) > 0) return true;
      }
      return false;
    },
    timeoutMs,
  );
}

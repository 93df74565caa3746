import { type ChildProcess, spawn } from 'node:child_process';
import * as path from 'node:path';

import type { Client } from '@temporalio/client';
import { temporal } from '@temporalio/proto';

import { logChildOutput } from './child-log';
import { killProcess, stopProcess } from './dev-server';

const repoRoot = path.resolve(__dirname, '../..');

export interface WorkerProcess {
  process: ChildProcess;
  logFile: string;
  /** SIGTERM: a clean shutdown. */
  stop(): Promise<void>;
  /** SIGKILL: a crash. */
  kill(): Promise<void>;
}

/**
 * Runs `src/worker.ts` in its own process (as an operator would), against the Temporal server at
 * `address`, and resolves once its task queue has a poller.
 */
export async function startWorkerProcess(opts: {
  args: string[];
  address: string;
  namespace: string;
  taskQueue: string;
  client: Client;
  logFile: string;
  env?: NodeJS.ProcessEnv;
  /** Another entry point than src/worker.ts (tests' fault-injecting host agent). */
  entry?: string;
}): Promise<WorkerProcess> {
  // `node --import tsx` runs the TypeScript entry in this one process, so a kill reaches the worker
  // itself (the tsx CLI would put it in a child process of its own).
  const entry = opts.entry ?? path.join(repoRoot, 'src/worker.ts');
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...opts.args], {
    cwd: repoRoot,
    env: { ...process.env, ...opts.env, TEMPORAL_ADDRESS: opts.address, TEMPORAL_NAMESPACE: opts.namespace },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  logChildOutput(child, opts.logFile);
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) =>
      reject(new Error(`worker ${opts.args.join(' ')} exited with ${code}; see ${opts.logFile}`)),
    ),
  );
  exited.catch(() => undefined);
  await Promise.race([waitForPoller(opts.client, opts.namespace, opts.taskQueue, 60_000), exited]);
  return {
    process: child,
    logFile: opts.logFile,
    stop: () => stopProcess(child, 10_000),
    kill: () => killProcess(child),
  };
}

/** Resolves once a worker polls `taskQueue` (workflow or activity side). */
export async function waitForPoller(
  client: Client,
  namespace: string,
  taskQueue: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const kinds = [
    temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
  ];
  while (Date.now() < deadline) {
    for (const taskQueueType of kinds) {
      const r = await client.workflowService.describeTaskQueue({
        namespace,
        taskQueue: { name: taskQueue },
        taskQueueType,
      });
      if ((r.pollers?.length ?? 0) > 0) return;
    }
    await new Promise((res) => setTimeout(res, 250));
  }
  throw new Error(`no worker polled ${taskQueue} within ${timeoutMs} ms`);
}

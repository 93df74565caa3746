/**
 * The one worker entry point. `--role engine` runs the workflows on the engine queue;
 * `--role host --host-id H --storage-root DIR --run-dir DIR` runs the host activities on host H's
 * queue (one such agent per hypervisor host). Both roles may share one process.
 */
import { NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import { temporalTarget } from './config/connection';
import { ENGINE_TASK_QUEUE, hostTaskQueue } from './config/names';
import { ConfigError, loadWorkerConfig } from './config/worker-config';
import type { HypervisorDriver } from './host/driver';
import { createEngineWorker } from './workers/engine';
import { createHostWorker } from './workers/host';

async function main(): Promise<void> {
  const config = loadWorkerConfig(process.argv.slice(2), process.env);
  const target = temporalTarget();
  // SIGINT/SIGTERM: the SDK runtime lets running activities finish within the grace time, then
  // every worker's run() resolves.
  Runtime.install({ shutdownSignals: ['SIGINT', 'SIGTERM'] });
  const connection = await NativeConnection.connect(target.connectionOptions);
  const workers: Worker[] = [];
  const drivers: HypervisorDriver[] = [];
  try {
    if (config.roles.includes('engine')) {
      workers.push(await createEngineWorker(connection, target.namespace));
      console.log(`engine worker on ${ENGINE_TASK_QUEUE} (${target.connectionOptions.address}, namespace ${target.namespace})`);
    }
    if (config.roles.includes('host') && config.hostId && config.storageRoot && config.runDir) {
      const host = await createHostWorker(connection, target.namespace, {
        hostId: config.hostId,
        storageRoot: config.storageRoot,
        runDir: config.runDir,
      });
      workers.push(host.worker);
      drivers.push(host.driver);
      console.log(`host agent ${config.hostId} on ${hostTaskQueue(config.hostId)} (storage root ${config.storageRoot}, run dir ${config.runDir})`);
    }
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    await Promise.all(drivers.map((d) => d.close()));
    await connection.close();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err instanceof ConfigError ? err.message : err);
    process.exit(err instanceof ConfigError ? 2 : 1);
  },
);

#!/usr/bin/env node
/**
 * The one worker entry point. `--role engine` runs the workflows on the engine queue;
 * `--role host --host-id H --storage-root DIR --run-dir DIR` runs the host activities on host H's
 * queue (one such agent per hypervisor host; `--driver libvirt [--libvirt-uri URI]` for VMs that
 * libvirt manages). Both roles may share one process.
 */
import { NativeConnection, type Worker } from '@temporalio/worker';

import { temporalTarget } from './config/connection';
import { ENGINE_TASK_QUEUE, hostTaskQueue } from './config/names';
import { ConfigError, loadWorkerConfig } from './config/worker-config';
import { chooseDriver } from './drivers/choose';
import { installRuntime } from './telemetry/runtime';
import { createEngineWorker } from './workers/engine';
import { createHostWorker, type HostAgent } from './workers/host';

async function main(): Promise<void> {
  const config = loadWorkerConfig(process.argv.slice(2), process.env);
  const target = temporalTarget();
  // SIGINT/SIGTERM: the SDK runtime lets running activities finish within the grace time, then
  // every worker's run() resolves. Logs are JSON lines; metrics on --metrics-address.
  const { logger } = installRuntime({ metricsAddress: config.metricsAddress, logLevel: config.logLevel });
  const connection = await NativeConnection.connect(target.connectionOptions);
  const workers: Worker[] = [];
  const hosts: HostAgent[] = [];
  try {
    if (config.roles.includes('engine')) {
      workers.push(await createEngineWorker(connection, target.namespace));
      logger.info(`engine worker on ${ENGINE_TASK_QUEUE}`, {
        taskQueue: ENGINE_TASK_QUEUE,
        address: target.connectionOptions.address,
        namespace: target.namespace,
      });
    }
    if (config.roles.includes('host') && config.hostId && config.storageRoot && config.runDir) {
      const host = await createHostWorker(connection, target.namespace, {
        hostId: config.hostId,
        storageRoot: config.storageRoot,
        runDir: config.runDir,
        driver: chooseDriver({ runDir: config.runDir, driver: config.driver, libvirtUri: config.libvirtUri }),
      });
      workers.push(...host.workers);
      hosts.push(host);
      logger.info(`host agent ${config.hostId} on ${hostTaskQueue(config.hostId)}`, {
        hostId: config.hostId,
        taskQueue: hostTaskQueue(config.hostId),
        storageRoot: config.storageRoot,
        runDir: config.runDir,
        driver: config.driver,
        ...(config.driver === 'libvirt' ? { libvirtUri: config.libvirtUri } : {}),
      });
    }
    if (config.metricsAddress)
      logger.info(`metrics on http://${config.metricsAddress}/metrics`, { metricsAddress: config.metricsAddress });
    await Promise.all(workers.map((w) => w.run()));
  } finally {
    await Promise.all(hosts.map((h) => h.close()));
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

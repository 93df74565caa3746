import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { Worker } from '@temporalio/worker';

import type { HostActivities } from '../../src/activities';
import type { HypervisorDriver } from '../../src/drivers/driver';
import { createEngineWorker } from '../../src/workers/engine';
import { createHostWorker, type HostAgent } from '../../src/workers/host';
import { HOST_ID } from './host-id';
import { startTestTemporal, type TestTemporal, workflowBundle } from './temporal';

export { HOST_ID };

/**
 * The whole product in one test process: a real dev server, the engine worker and a host agent
 * driving real QEMU VMs made by the lab under a temp dir.
 */
export interface TestStack {
  temporal: TestTemporal;
  storageRoot: string;
  runDir: string;
  engine: Worker;
  host: HostAgent;
  driver: HypervisorDriver;
  close(): Promise<void>;
}

export async function startTestStack(
  opts: {
    wrapActivities?: (a: HostActivities) => HostActivities;
    /** false: serve the Web UI too */ headless?: boolean;
  } = {},
): Promise<TestStack> {
  const temporal = await startTestTemporal({ headless: opts.headless });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lm-stack-'));
  const storageRoot = path.join(dir, 'storage');
  const runDir = path.join(dir, 'run');
  const engine = await createEngineWorker(temporal.connection, temporal.server.namespace, {
    workflowBundle: await workflowBundle(),
  });
  const hostAgent = await createHostWorker(temporal.connection, temporal.server.namespace, {
    hostId: HOST_ID,
    storageRoot,
    runDir,
    wrapActivities: opts.wrapActivities,
    workflowBundle: await workflowBundle(),
  });
  const { driver } = hostAgent;
  const runs = [engine.run(), hostAgent.run()];
  return {
    temporal,
    storageRoot,
    runDir,
    engine,
    host: hostAgent,
    driver,
    async close() {
      if (engine.getState() === 'RUNNING') engine.shutdown();
      hostAgent.shutdown();
      await Promise.allSettled(runs);
      await hostAgent.close();
      await temporal.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Every file under `root` with its size and mtime: equal snapshots mean nothing was touched. */
export function snapshotFiles(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = path.join(dir, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else out[path.relative(root, p)] = `${st.size}:${st.mtimeMs}`;
    }
  };
  walk(root);
  return out;
}

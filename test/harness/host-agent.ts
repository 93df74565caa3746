/**
 * A host agent for fault tests: the real one (src/workers/host.ts, real QMP driver, or the libvirt
 * driver when LIVE_MERGE_DRIVER=libvirt), plus hold points named in LIVE_MERGE_TEST_HOLDS
 * (comma-separated). At a hold point it writes `<LIVE_MERGE_TEST_HOLD_DIR>/<point>` and stops
 * there, heartbeating, so the test can kill it in exactly that window, until the test writes
 * `release-<point>` beside it. Points: `before:<activity>`, `after:<activity>`, `before:completeJob`, `after:completeJob`.
 */
import { existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { Context } from '@temporalio/activity';
import { NativeConnection, Runtime } from '@temporalio/worker';

import type { HostActivities } from '../../src/activities';
import { temporalTarget } from '../../src/config/connection';
import { chooseDriver } from '../../src/drivers/choose';
import type { HypervisorDriver } from '../../src/drivers/driver';
import { createHostWorker } from '../../src/workers/host';

const holds = new Set((process.env.LIVE_MERGE_TEST_HOLDS ?? '').split(',').filter(Boolean));
const holdDir = process.env.LIVE_MERGE_TEST_HOLD_DIR ?? '/tmp';
const [hostId, storageRoot, runDir] = [
  process.env.LIVE_MERGE_HOST_ID,
  process.env.LIVE_MERGE_STORAGE_ROOT,
  process.env.LIVE_MERGE_RUN_DIR,
];
if (!hostId || !storageRoot || !runDir)
  throw new Error('LIVE_MERGE_HOST_ID, LIVE_MERGE_STORAGE_ROOT and LIVE_MERGE_RUN_DIR are required');

async function hold(point: string): Promise<void> {
  if (!holds.has(point)) return;
  const file = path.join(holdDir, point.replace(':', '-'));
  writeFileSync(file, String(Date.now()));
  const ctx = Context.current();
  while (!existsSync(path.join(holdDir, `release-${path.basename(file)}`))) {
    ctx.heartbeat();
    await ctx.sleep(200);
  }
}

function withHolds(activities: HostActivities): HostActivities {
  const wrapped: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(activities) as Array<[string, (input: unknown) => Promise<unknown>]>) {
    wrapped[name] = async (input: unknown) => {
      await hold(`before:${name}`);
      const result = await fn(input);
      await hold(`after:${name}`);
      return result;
    };
  }
  return wrapped as HostActivities;
}

/** The pivot with its two hold points around it. */
function holdingPivot(driver: HypervisorDriver): HypervisorDriver {
  const complete = driver.completeJob.bind(driver);
  driver.completeJob = async (vmId, jobId) => {
    await hold('before:completeJob');
    await complete(vmId, jobId);
    await hold('after:completeJob');
  };
  return driver;
}

function driverOf(): HypervisorDriver {
  return chooseDriver({
    runDir: runDir!,
    driver: process.env.LIVE_MERGE_DRIVER === 'libvirt' ? 'libvirt' : 'qmp',
    libvirtUri: process.env.LIVE_MERGE_LIBVIRT_URI,
  });
}

async function main(): Promise<void> {
  Runtime.install({ shutdownSignals: ['SIGINT', 'SIGTERM'] });
  const target = temporalTarget();
  const connection = await NativeConnection.connect(target.connectionOptions);
  const agent = await createHostWorker(connection, target.namespace, {
    hostId: hostId!,
    storageRoot: storageRoot!,
    runDir: runDir!,
    driver: holdingPivot(driverOf()),
    wrapActivities: withHolds,
    // Bundled once by the test (process-stack.ts), not at each of the agent's many starts.
    ...(process.env.LIVE_MERGE_TEST_WORKFLOW_BUNDLE
      ? { workflowBundle: { codePath: process.env.LIVE_MERGE_TEST_WORKFLOW_BUNDLE } }
      : {}),
  });
  console.log(`test host agent ${hostId} with holds [${[...holds].join(', ')}]`);
  await agent.run();
  await agent.close();
  await connection.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { Worker } from '@temporalio/worker';

import { type BusyHostPlan, runBusyHost, type SimHost, startSimHost } from '../../lab/sim/busy-host';
import { HOST_STEP_SLOTS } from '../../src/config/policy';
import { createEngineWorker } from '../../src/workers/engine';
import { startTestTemporal, type TestTemporal, workflowBundle } from '../harness/temporal';

/**
 * A busy host, at reduced scale: more disks with a running block job than the host has slots for
 * its short steps. With the product's own worker settings every merge completes, and a new merge
 * started meanwhile is picked up at once and finishes while the long jobs still run (before the
 * waits had a queue of their own, it failed as HostUnreachable: every slot held by a wait).
 * How fast the steps follow a job's end at full scale is the busy-host benchmark's figure.
 */

jest.setTimeout(240_000);

let t: TestTemporal;
let dir: string;
let engine: Worker;
let host: SimHost | undefined;
const runs: Promise<void>[] = [];

beforeAll(async () => {
  t = await startTestTemporal();
  dir = mkdtempSync(path.join(os.tmpdir(), 'lm-busy-'));
  engine = await createEngineWorker(t.connection, t.server.namespace, { workflowBundle: await workflowBundle() });
  runs.push(engine.run());
});

afterAll(async () => {
  if (engine?.getState() === 'RUNNING') engine.shutdown();
  host?.agent.shutdown();
  await Promise.allSettled(runs);
  await host?.agent.close();
  await t?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('more running block jobs than step slots: every merge completes, and a new one is not starved', async () => {
  const plan: BusyHostPlan = {
    hostId: 'busy1',
    storageRoot: path.join(dir, 'storage'),
    // 2 disks each: more long waits than the steps have slots.
    merges: Math.ceil((HOST_STEP_SLOTS + 20) / 2),
    jobSeconds: 600,
    timeScale: 20,
    // The probe must be picked up at once, though every step slot is held by a long job's wait.
    probePickupTimeoutSeconds: 5,
  };
  host = await startSimHost(t.connection, t.server.namespace, plan);
  runs.push(host.agent.run());

  const outcome = await runBusyHost(t.client, host, plan);

  expect(outcome.failed).toEqual([]);
  expect(outcome.completed).toBe(plan.merges);
  expect(outcome.probe).toMatchObject({ completed: true, failure: undefined, endedWhileLongJobsRan: true });
  // Every disk's chain check ran after its job ended (none was skipped or ran early).
  const gaps = Object.values(await host.jobEndToCheckMs());
  expect(gaps).toHaveLength(2 * (plan.merges + 1));
  expect(gaps.every((ms) => ms >= 0)).toBe(true);
});

/**
 * One busy host, simulated: many disk merges whose block jobs run long on one host agent with the
 * product's own worker settings, then a probe merge with a short job while they all still run.
 * The test (test/workflow/busy-host.test.ts) runs it small, the benchmark (bench/busy-host.ts) at
 * full scale. The host agent runs the real activities over the simulated driver.
 */
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';

import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';

import { blockJobId, ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import type { LiveMergeRequest } from '../../src/domain/input';
import { volumePath } from '../../src/domain/layout';
import { SimDriver } from '../../src/host/sim-driver';
import { createHostWorker, type HostAgent } from '../../src/workers/host';

const MiB = 1024 * 1024;
/** Every simulated job copies at this rate; a job's length sets its duration. */
const BYTES_PER_SECOND = 64 * MiB;

export interface BusyHostPlan {
  hostId: string;
  storageRoot: string;
  /** Merges of two disks each, all started at once. */
  merges: number;
  /** How long each of their block jobs runs (simulated time). */
  jobSeconds: number;
  /** Simulated seconds per real second. */
  timeScale: number;
  /** The merges' `hostPickupTimeoutSeconds`; undefined keeps the product's default. */
  hostPickupTimeoutSeconds?: number;
}

export interface SimHost {
  agent: HostAgent;
  driver: SimDriver;
  /** Milliseconds from each job's end to the start of its chain check, by `<vmId>/<jobId>`. */
  jobEndToCheckMs(): Map<string, number>;
}

const PROBE = 'probe';

/** The host agent of the plan, its VMs made: the product's activities and worker settings. */
export async function startSimHost(
  connection: NativeConnection,
  namespace: string,
  plan: BusyHostPlan,
): Promise<SimHost> {
  const driver = new SimDriver({ bytesPerSecond: BYTES_PER_SECOND, timeScale: plan.timeScale });
  for (const i of [...Array.from({ length: plan.merges }, (_, n) => String(n)), PROBE]) {
    const seconds = i === PROBE ? 1 : plan.jobSeconds;
    driver.addVm(
      vmOf(i),
      [0, 1].map((d) => {
        const diskId = `m${i}-d${d}`;
        mkdirSync(path.join(plan.storageRoot, 'images', diskId), { recursive: true });
        const volumes = [1, 0].map((v) => volumePath(plan.storageRoot, diskId, `${diskId}-v${v}`));
        return { diskId, volumes, sizeBytes: Math.round(seconds * BYTES_PER_SECOND) };
      }),
    );
  }
  const checkStarted = new Map<string, number>();
  const agent = await createHostWorker(connection, namespace, {
    hostId: plan.hostId,
    storageRoot: plan.storageRoot,
    runDir: plan.storageRoot,
    driver,
    wrapActivities: (a) => ({
      ...a,
      verifyChain: async (input) => {
        checkStarted.set(`${input.vmId}/${blockJobId(input.diskId, input.topVolumeId)}`, Date.now());
        return a.verifyChain(input);
      },
    }),
  });
  return {
    agent,
    driver,
    jobEndToCheckMs: () =>
      new Map(
        [...checkStarted].flatMap(([key, at]) => {
          const ended = driver.concludedAt.get(key);
          return ended === undefined ? [] : [[key, at - ended] as const];
        }),
      ),
  };
}

export interface BusyHostOutcome {
  completed: number;
  failed: string[];
  /** The probe's outcome, and whether it ended while every long job still ran. */
  probe: { completed: boolean; failure?: string; endedWhileLongJobsRan: boolean; ms: number };
}

/** Starts every merge of the plan, then the probe once every long job runs; waits for all. */
export async function runBusyHost(client: Client, host: SimHost, plan: BusyHostPlan): Promise<BusyHostOutcome> {
  const results = Array.from({ length: plan.merges }, (_, i) => start(client, plan, String(i)));
  // The probe starts once every long job has started, none yet ended (the plan's jobs outlast the starts).
  await until(async () => {
    const jobs = await Promise.all(
      Array.from({ length: plan.merges }, (_, i) => host.driver.listJobs(vmOf(String(i)))),
    );
    if (jobs.some((js) => js.some((j) => j.status === 'concluded')))
      throw new Error('a long job ended before all had started: make the jobs longer');
    return jobs.every((js) => js.length === 2);
  });
  const t0 = Date.now();
  const probe = await start(client, plan, PROBE);
  const probeMs = Date.now() - t0;
  const longJobs = Array.from({ length: plan.merges }, (_, i) => host.driver.listJobs(vmOf(String(i))));
  const stillRunning = (await Promise.all(longJobs)).every((js) => js.every((j) => j.status === 'running'));
  const settled = await Promise.all(results);
  return {
    completed: settled.filter((r) => r === undefined).length,
    failed: settled.filter((r): r is string => r !== undefined),
    probe: { completed: probe === undefined, failure: probe, endedWhileLongJobsRan: stillRunning, ms: probeMs },
  };
}

function vmOf(i: string): string {
  return `vm-${i}`;
}

/** Runs merge `i` to its end: undefined when it completed, else why it failed. */
async function start(client: Client, plan: BusyHostPlan, i: string): Promise<string | undefined> {
  const request: LiveMergeRequest = {
    snapshotId: `busy-${i}`,
    vmId: vmOf(i),
    hostId: plan.hostId,
    disks: [0, 1].map((d) => ({
      diskId: `m${i}-d${d}`,
      baseVolumeId: `m${i}-d${d}-v0`,
      topVolumeId: `m${i}-d${d}-v1`,
    })),
    ...(plan.hostPickupTimeoutSeconds ? { options: { hostPickupTimeoutSeconds: plan.hostPickupTimeoutSeconds } } : {}),
  };
  try {
    const handle = await client.workflow.start('LiveMergeWorkflow', {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: liveMergeWorkflowId(request.snapshotId),
      args: [request],
    });
    await handle.result();
    return undefined;
  } catch (err) {
    const cause = err instanceof Error && err.cause instanceof Error ? err.cause : err;
    return cause instanceof Error ? cause.message : String(cause);
  }
}

async function until(check: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('the long jobs did not all start in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}

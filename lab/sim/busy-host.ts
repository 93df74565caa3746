/**
 * One busy host, simulated: many disk merges whose block jobs run long on one host agent with the
 * product's own worker settings, then a probe merge with a short job while they all still run.
 * The test (test/workflow/busy-host.test.ts) runs it small and in-process, the benchmark
 * (bench/busy-host.ts) at full scale with the host agent in a process of its own
 * (lab/sim/host-process.ts). The host agent runs the real activities over the simulated driver.
 */
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';

import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';

import { blockJobId, ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import type { LiveMergeRequest } from '../../src/domain/input';
import { volumePath } from '../../src/domain/layout';
import { createHostWorker, type HostAgent } from '../../src/workers/host';
import { SimDriver } from './sim-driver';

const MiB = 1024 * 1024;
/** Every simulated job copies at this rate; a job's length sets its duration. */
const BYTES_PER_SECOND = 64 * MiB;
export const PROBE = 'probe';

export interface BusyHostPlan {
  hostId: string;
  storageRoot: string;
  /** Merges of two disks each, all started at once. */
  merges: number;
  /** How long their block jobs run (simulated time): from this to twice it, spread evenly. */
  jobSeconds: number;
  /** Simulated seconds per real second. */
  timeScale: number;
  /**
   * The probe's `hostPickupTimeoutSeconds` (undefined: the product's default). The long merges keep
   * the default: a burst of them all starting at once on a loaded machine is not what is measured.
   */
  probePickupTimeoutSeconds?: number;
}

/** What the runner asks of the host side, in this process or another. */
export interface HostView {
  /** How many of the long merges' jobs have started, and how many of those have ended. */
  longJobs(): Promise<{ started: number; ended: number }>;
  /** Milliseconds from each job's end to the start of its chain check, by `<vmId>/<jobId>`. */
  jobEndToCheckMs(): Promise<Record<string, number>>;
  /** Lets the long merges' jobs copy: they are held until then, so they outlast the probe however slow the starts. */
  releaseLongJobs(): Promise<void>;
}

export interface SimHost extends HostView {
  agent: HostAgent;
  driver: SimDriver;
}

/** The host agent of the plan, its VMs made: the product's activities and worker settings. */
export async function startSimHost(
  connection: NativeConnection,
  namespace: string,
  plan: BusyHostPlan,
): Promise<SimHost> {
  const driver = new SimDriver({ bytesPerSecond: BYTES_PER_SECOND, timeScale: plan.timeScale });
  driver.holdJobs((vmId) => vmId !== vmOf(PROBE));
  const ids = Array.from({ length: plan.merges }, (_, n) => String(n));
  for (const [n, i] of [...ids, PROBE].entries()) {
    const seconds = i === PROBE ? 1 : plan.jobSeconds * (1 + n / plan.merges);
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
    async longJobs() {
      const listed = await Promise.all(
        ids.map(async (i) => (await driver.listJobs(vmOf(i))).map((j) => `${vmOf(i)}/${j.id}`)),
      );
      const seen = new Set(listed.flat());
      const keys = ids.flatMap((i) => [0, 1].map((d) => jobKey(i, d)));
      const ended = keys.filter((k) => driver.concludedAt.has(k)).length;
      return { started: keys.filter((k) => seen.has(k) || driver.concludedAt.has(k)).length, ended };
    },
    async releaseLongJobs() {
      driver.releaseJobs();
    },
    async jobEndToCheckMs() {
      const gaps: Record<string, number> = {};
      for (const [key, at] of checkStarted) {
        const ended = driver.concludedAt.get(key);
        if (ended !== undefined) gaps[key] = at - ended;
      }
      return gaps;
    },
  };
}

export interface BusyHostOutcome {
  completed: number;
  failed: string[];
  /** The probe's outcome, how long it took, and whether it ended while no long job had ended. */
  probe: { completed: boolean; failure?: string; ms: number; endedWhileLongJobsRan: boolean };
}

/** Starts every merge of the plan, then the probe once every long job runs; waits for all. */
export async function runBusyHost(client: Client, host: HostView, plan: BusyHostPlan): Promise<BusyHostOutcome> {
  const failures: string[] = [];
  const results = Array.from({ length: plan.merges }, (_, i) =>
    runMerge(client, plan, String(i)).then((failure) => {
      if (failure !== undefined) failures.push(`busy-${i}: ${failure}`);
      return failure;
    }),
  );
  // The probe starts once every long job has started and none has ended (the jobs are held).
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (failures.length > 0) throw new Error(`a long merge failed before the probe: ${failures[0]}`);
    const { started, ended } = await host.longJobs();
    if (ended > 0)
      throw new Error(`a long job ended after ${started} of ${2 * plan.merges} had started: make the jobs longer`);
    if (started === 2 * plan.merges) break;
    if (process.env.LIVE_MERGE_BUSY_TRACE) console.log(`busy host: ${started} long jobs started`);
    if (Date.now() > deadline) throw new Error(`only ${started} of ${2 * plan.merges} long jobs started in time`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const t0 = Date.now();
  const probe = await runMerge(client, plan, PROBE);
  const ms = Date.now() - t0;
  const endedWhileLongJobsRan = (await host.longJobs()).ended === 0;
  await host.releaseLongJobs();
  const settled = await Promise.all(results);
  return {
    completed: settled.filter((r) => r === undefined).length,
    failed: settled.filter((r): r is string => r !== undefined),
    probe: { completed: probe === undefined, failure: probe, ms, endedWhileLongJobsRan },
  };
}

export function vmOf(i: string): string {
  return `vm-${i}`;
}

/** The `<vmId>/<jobId>` of merge `i`'s disk `d`. */
export function jobKey(i: string, d: number): string {
  return `${vmOf(i)}/${blockJobId(`m${i}-d${d}`, `m${i}-d${d}-v1`)}`;
}

/** Runs merge `i` to its end: undefined when it completed, else why it failed. */
async function runMerge(client: Client, plan: BusyHostPlan, i: string): Promise<string | undefined> {
  const request: LiveMergeRequest = {
    snapshotId: `busy-${i}`,
    vmId: vmOf(i),
    hostId: plan.hostId,
    disks: [0, 1].map((d) => ({
      diskId: `m${i}-d${d}`,
      baseVolumeId: `m${i}-d${d}-v0`,
      topVolumeId: `m${i}-d${d}-v1`,
    })),
    ...(i === PROBE && plan.probePickupTimeoutSeconds
      ? { options: { hostPickupTimeoutSeconds: plan.probePickupTimeoutSeconds } }
      : {}),
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

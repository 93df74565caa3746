import { mkdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Worker } from '@temporalio/worker';
import { z } from 'zod';

import { SimDriver } from '../../lab/sim/sim-driver';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import { HOST_STEP_SLOTS } from '../../src/config/policy';
import type { LiveMergeRequest } from '../../src/domain/input';
import { volumePath } from '../../src/domain/layout';
import { createEngineWorker } from '../../src/workers/engine';
import { createHostWorker } from '../../src/workers/host';
import { workflowsPath } from '../../src/workers/workflow-bundle';
import { noopActivities } from '../baseline/activities';
import { BASELINE_ENGINE_QUEUE, baselineHostQueue } from '../baseline/workflows';
import {
  bundle,
  installRuntime,
  mapLimit,
  median,
  MiB,
  percentile,
  round,
  rssOf,
  sleep,
  withCauses,
} from '../support/common';

/**
 * One phase of the throughput benchmark: N merges of 2 disks each across H simulated hosts, all
 * started at once, with the workers of that phase in this process. Run by the benchmark as a child
 * process (phase-main.ts), inside the server's network namespace when it has one, so the workers
 * reach a cluster's frontend directly, as its engine workers do.
 */

export const DISKS = 2;

/** Worker options for many short tasks on 2 cores: a big sticky cache, few pollers per host queue. */
export const ENGINE_OPTIONS = {
  maxCachedWorkflows: 5000,
  maxConcurrentWorkflowTaskExecutions: 200,
  maxConcurrentWorkflowTaskPolls: 20,
} as const;
export const HOST_OPTIONS = { maxConcurrentActivityTaskPolls: 2, maxConcurrentWorkflowTaskPolls: 2 } as const;

export const phaseSpecSchema = z
  .object({
    /** `baseline`: the no-op shape with its children on the engine (the product before `disk-on-host`); `baseline-host`: on the hosts' queues (the product now). */
    kind: z.enum(['baseline', 'baseline-host', 'product']),
    merges: z.number().int().min(1),
    hosts: z.number().int().min(1),
    /** Scratch space for the simulated hosts' storage roots. */
    dir: z.string().min(1),
    address: z.string().min(1),
    namespace: z.string().min(1),
    /** Ids unique to this phase, so phases on one server never reuse a workflow id. */
    idPrefix: z.string().regex(/^[a-z0-9-]+$/),
    tls: z
      .object({
        serverName: z.string().min(1),
        caFile: z.string().min(1),
        certFile: z.string().min(1),
        keyFile: z.string().min(1),
      })
      .strict()
      .optional(),
    resultFile: z.string().min(1),
  })
  .strict();
export type PhaseSpec = z.infer<typeof phaseSpecSchema>;

export interface PhaseResult {
  merges: number;
  failed: number;
  failures: string[];
  wallSec: number;
  mergesPerSec: number;
  e2eP50Ms: number;
  e2eP99Ms: number;
  /** This process: the engine worker and every host worker of the phase. */
  workerRssMaxMiB: number;
  workerCpuSec: number;
}

/** Printed on stdout when the merges start and when the last one ended: the parent samples the server between. */
export const LOAD_START = 'LOAD START';
export const LOAD_END = 'LOAD END';

function connectionOptions(spec: PhaseSpec) {
  const tls = spec.tls && {
    serverNameOverride: spec.tls.serverName,
    serverRootCACertificate: readFileSync(spec.tls.caFile),
    clientCertPair: { crt: readFileSync(spec.tls.certFile), key: readFileSync(spec.tls.keyFile) },
  };
  return { address: spec.address, tls };
}

export async function runPhase(spec: PhaseSpec, log: (line: string) => void): Promise<PhaseResult> {
  installRuntime();
  const { kind, merges, hosts, namespace: ns } = spec;
  const options = connectionOptions(spec);
  const connection = await NativeConnection.connect(options);
  const clientConnection = await Connection.connect(options);
  const client = new Client({ connection: clientConnection, namespace: ns });
  const hostIds = Array.from({ length: hosts }, (_, h) => `${spec.idPrefix}-h${h}`);
  const workers: Worker[] = [];
  const drivers: SimDriver[] = [];
  try {
    if (kind !== 'product') {
      const baselineBundle = await bundle(require.resolve('../baseline/workflows'));
      workers.push(
        await Worker.create({
          connection,
          namespace: ns,
          taskQueue: BASELINE_ENGINE_QUEUE,
          workflowBundle: baselineBundle,
          ...ENGINE_OPTIONS,
        }),
      );
      for (const hostId of hostIds) {
        workers.push(
          await Worker.create({
            connection,
            namespace: ns,
            taskQueue: baselineHostQueue(hostId),
            activities: noopActivities,
            // The host shape runs its disks' workflows there too, with the product's host slots.
            ...(kind === 'baseline-host'
              ? {
                  workflowBundle: baselineBundle,
                  maxConcurrentWorkflowTaskExecutions: HOST_STEP_SLOTS,
                  maxConcurrentLocalActivityExecutions: HOST_STEP_SLOTS,
                }
              : {}),
            ...HOST_OPTIONS,
          }),
        );
      }
    } else {
      workers.push(
        await createEngineWorker(connection, ns, { workflowBundle: await bundle(workflowsPath()), ...ENGINE_OPTIONS }),
      );
      for (const [h, hostId] of hostIds.entries()) {
        const storageRoot = path.join(spec.dir, hostId);
        const driver = new SimDriver({ seed: h + 1, bytesPerSecond: 1024 * MiB });
        for (let i = h; i < merges; i += hosts) driver.addVm(vmId(spec, i), simDisks(spec, storageRoot, i));
        drivers.push(driver);
        const agent = await createHostWorker(
          connection,
          ns,
          { hostId, storageRoot, runDir: spec.dir, driver, workflowBundle: await bundle(workflowsPath()) },
          HOST_OPTIONS,
        );
        workers.push(...agent.workers);
      }
    }
    return await drive(spec, client, workers, hostIds, log);
  } finally {
    for (const d of drivers) await d.close();
    await clientConnection.close();
    await connection.close();
  }
}

const vmId = (spec: PhaseSpec, i: number) => `${spec.idPrefix}-vm${i}`;
const diskId = (spec: PhaseSpec, i: number, d: number) => `${spec.idPrefix}-m${i}-d${d}`;

function simDisks(spec: PhaseSpec, storageRoot: string, i: number) {
  return Array.from({ length: DISKS }, (_, d) => {
    const id = diskId(spec, i, d);
    mkdirSync(path.join(storageRoot, 'images', id), { recursive: true });
    return {
      diskId: id,
      volumes: [2, 1, 0].map((v) => volumePath(storageRoot, id, `${id}-v${v}`)),
      sizeBytes: 16 * MiB,
    };
  });
}

function request(spec: PhaseSpec, i: number, hostId: string): LiveMergeRequest {
  const [d0, d1] = [diskId(spec, i, 0), diskId(spec, i, 1)];
  return {
    snapshotId: `${spec.idPrefix}-s${i}`,
    vmId: vmId(spec, i),
    hostId,
    disks: [
      { diskId: d0, baseVolumeId: `${d0}-v0`, topVolumeId: `${d0}-v1` }, // intermediate
      { diskId: d1, baseVolumeId: `${d1}-v1`, topVolumeId: `${d1}-v2` }, // active, with pivot
    ],
  };
}

async function drive(
  spec: PhaseSpec,
  client: Client,
  workers: Worker[],
  hostIds: string[],
  log: (line: string) => void,
): Promise<PhaseResult> {
  const runs = workers.map((w) => w.run());
  let workerRssMax = 0;
  const sampler = setInterval(() => (workerRssMax = Math.max(workerRssMax, rssOf(process.pid))), 250);
  const failures: string[] = [];
  const latencies: number[] = [];
  let done = 0;
  const cpu0 = process.cpuUsage();
  const t0 = Date.now();
  let lastEnd = t0;
  log(LOAD_START);
  const progress = setInterval(
    () => log(`  ${spec.kind}: ${done}/${spec.merges} done after ${((Date.now() - t0) / 1000).toFixed(0)} s`),
    15_000,
  );
  let cpu1: NodeJS.CpuUsage;
  try {
    await mapLimit(
      Array.from({ length: spec.merges }, (_, i) => i),
      spec.merges,
      async (i) => {
        const hostId = hostIds[i % hostIds.length];
        const started = Date.now();
        try {
          const handle =
            spec.kind !== 'product'
              ? await client.workflow.start('BaselineMergeWorkflow', {
                  taskQueue: BASELINE_ENGINE_QUEUE,
                  workflowId: `${spec.idPrefix}-baseline-${i}`,
                  args: [{ hostId, disks: ['d0', 'd1'], shape: spec.kind === 'baseline-host' ? 'host' : 'engine' }],
                })
              : await client.workflow.start('LiveMergeWorkflow', {
                  taskQueue: ENGINE_TASK_QUEUE,
                  workflowId: liveMergeWorkflowId(`${spec.idPrefix}-s${i}`),
                  args: [request(spec, i, hostId)],
                });
          await handle.result();
        } catch (err) {
          failures.push(`merge ${i}: ${withCauses(err)}`);
        }
        const end = Date.now();
        latencies.push(end - started);
        lastEnd = Math.max(lastEnd, end);
        done++;
      },
    );
  } finally {
    cpu1 = process.cpuUsage(cpu0);
    log(LOAD_END);
    clearInterval(progress);
    clearInterval(sampler);
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    await Promise.allSettled(runs);
  }
  await sleep(200);
  const wallSec = (lastEnd - t0) / 1000;
  return {
    merges: spec.merges,
    failed: failures.length,
    failures: failures.slice(0, 10),
    wallSec: round(wallSec, 2),
    mergesPerSec: spec.merges / wallSec,
    e2eP50Ms: median(latencies),
    e2eP99Ms: percentile(latencies, 99),
    workerRssMaxMiB: Math.round(workerRssMax / MiB),
    workerCpuSec: round((cpu1.user + cpu1.system) / 1e6, 1),
  };
}

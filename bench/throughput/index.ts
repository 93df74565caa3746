import { mkdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { Worker } from '@temporalio/worker';

import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../src/config/names';
import type { LiveMergeRequest } from '../src/domain/input';
import { volumePath } from '../src/domain/layout';
import { SimDriver } from '../src/host/sim-driver';
import { createEngineWorker } from '../src/workers/engine';
import { createHostWorker } from '../src/workers/host';
import { workflowsPath } from '../src/workers/workflow-bundle';
import { noopActivities } from './baseline/activities';
import { BASELINE_ENGINE_QUEUE, baselineHostQueue } from './baseline/workflows';
import {
  type Bench,
  type BenchContext,
  type BenchServer,
  bundle,
  type Figure,
  mapLimit,
  median,
  MiB,
  percentile,
  round,
  rssOf,
  scratchDir,
  sleep,
  startBenchServer,
} from './support/common';

/**
 * Throughput at scale: N merges of 2 disks each across H simulated hosts, all started at once on one
 * dev server, against a baseline workflow of the same shape (one child per disk, five no-op
 * activities each) on the same server in the same run.
 */

interface PhaseResult {
  merges: number;
  failed: number;
  failures: string[];
  wallSec: number;
  mergesPerSec: number;
  e2eP50Ms: number;
  e2eP99Ms: number;
  workerRssMaxMiB: number;
  serverRssMaxMiB: number;
  /** CPU seconds used during the phase: this process (the workers) and the dev server. */
  workerCpuSec: number;
  serverCpuSec: number;
}

/** User + system CPU seconds of a process, from /proc/<pid>/stat. */
function cpuSecOf(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (100/s)
  } catch {
    return 0;
  }
}

const DISKS = 2;

/** Worker options for many short tasks on 2 cores: a big sticky cache, few pollers per host queue. */
const ENGINE_OPTIONS = {
  maxCachedWorkflows: 5000,
  maxConcurrentWorkflowTaskExecutions: 200,
  maxConcurrentWorkflowTaskPolls: 20,
} as const;
const HOST_OPTIONS = { maxConcurrentActivityTaskPolls: 2 } as const;

export const throughputBench: Bench = {
  name: 'throughput',
  title: 'Throughput at scale (simulated hosts, one dev server)',
  async run(ctx: BenchContext) {
    const merges = ctx.quick ? 40 : 1000;
    const hosts = ctx.quick ? 10 : 50;
    const scratch = scratchDir('tp');
    const srv = await startBenchServer(scratch.dir);
    try {
      ctx.log(`throughput: ${merges} merges x ${DISKS} disks across ${hosts} hosts; baseline first`);
      const baseline = await runPhase(srv, 'baseline', merges, hosts, scratch.dir, ctx);
      ctx.log(
        `  baseline: ${baseline.mergesPerSec.toFixed(1)} merges/s, p50 ${baseline.e2eP50Ms} ms, p99 ${baseline.e2eP99Ms} ms`,
      );
      const product = await runPhase(srv, 'product', merges, hosts, scratch.dir, ctx);
      ctx.log(
        `  product:  ${product.mergesPerSec.toFixed(1)} merges/s, p50 ${product.e2eP50Ms} ms, p99 ${product.e2eP99Ms} ms, failed ${product.failed}`,
      );
      const ratio = round(product.mergesPerSec / baseline.mergesPerSec, 3);
      const figures: Figure[] = [
        {
          metric: `merges/s (${merges} merges x ${DISKS} disks, ${hosts} hosts)`,
          value: round(product.mergesPerSec, 1),
          unit: 'merges/s',
          baseline: round(baseline.mergesPerSec, 1),
          baselineLabel: 'same-shape no-op workflow',
          ratio,
          target: 'ratio >= 0.80',
          met: ratio >= 0.8,
        },
        {
          metric: 'failed merges',
          value: product.failed,
          unit: 'merges',
          baseline: baseline.failed,
          baselineLabel: 'same-shape no-op workflow',
          target: '0',
          met: product.failed === 0,
        },
        {
          metric: 'end-to-end p50',
          value: product.e2eP50Ms,
          unit: 'ms',
          baseline: baseline.e2eP50Ms,
          baselineLabel: 'same-shape no-op workflow',
          ratio: round(product.e2eP50Ms / baseline.e2eP50Ms, 2),
        },
        {
          metric: 'end-to-end p99',
          value: product.e2eP99Ms,
          unit: 'ms',
          baseline: baseline.e2eP99Ms,
          baselineLabel: 'same-shape no-op workflow',
          ratio: round(product.e2eP99Ms / baseline.e2eP99Ms, 2),
        },
        {
          metric: 'CPU per merge: workers',
          value: round((product.workerCpuSec / merges) * 1000, 1),
          unit: 'ms',
          baseline: round((baseline.workerCpuSec / merges) * 1000, 1),
          baselineLabel: 'same-shape no-op workflow',
          ratio: round(product.workerCpuSec / baseline.workerCpuSec, 2),
        },
        {
          metric: 'CPU per merge: dev server',
          value: round((product.serverCpuSec / merges) * 1000, 1),
          unit: 'ms',
          baseline: round((baseline.serverCpuSec / merges) * 1000, 1),
          baselineLabel: 'same-shape no-op workflow',
          ratio: round(product.serverCpuSec / baseline.serverCpuSec, 2),
        },
        {
          metric: `worker RSS (engine + ${hosts} host workers, one process)`,
          value: product.workerRssMaxMiB,
          unit: 'MiB',
          baseline: baseline.workerRssMaxMiB,
          baselineLabel: 'same-shape no-op workflow',
          ratio: round(product.workerRssMaxMiB / baseline.workerRssMaxMiB, 2),
        },
      ];
      return {
        figures,
        details: {
          merges,
          hosts,
          disksPerMerge: DISKS,
          engineOptions: ENGINE_OPTIONS,
          hostOptions: HOST_OPTIONS,
          baseline,
          product,
        },
      };
    } finally {
      await srv.close();
      scratch.remove();
    }
  },
};

async function runPhase(
  srv: BenchServer,
  kind: 'baseline' | 'product',
  merges: number,
  hosts: number,
  dir: string,
  ctx: BenchContext,
): Promise<PhaseResult> {
  const ns = srv.server.namespace;
  const hostIds = Array.from({ length: hosts }, (_, h) => `${kind === 'product' ? 'h' : 'b'}${h}`);
  const workers: Worker[] = [];
  const drivers: SimDriver[] = [];
  if (kind === 'baseline') {
    workers.push(
      await Worker.create({
        connection: srv.connection,
        namespace: ns,
        taskQueue: BASELINE_ENGINE_QUEUE,
        workflowBundle: await bundle(require.resolve('./baseline/workflows')),
        ...ENGINE_OPTIONS,
      }),
    );
    for (const hostId of hostIds) {
      workers.push(
        await Worker.create({
          connection: srv.connection,
          namespace: ns,
          taskQueue: baselineHostQueue(hostId),
          activities: noopActivities,
          ...HOST_OPTIONS,
        }),
      );
    }
  } else {
    workers.push(
      await createEngineWorker(srv.connection, ns, {
        workflowBundle: await bundle(workflowsPath()),
        ...ENGINE_OPTIONS,
      }),
    );
    for (const [h, hostId] of hostIds.entries()) {
      const storageRoot = path.join(dir, hostId);
      const driver = new SimDriver({ seed: h + 1, bytesPerSecond: 1024 * MiB });
      for (let i = h; i < merges; i += hosts) {
        driver.addVm(
          `vm${i}`,
          Array.from({ length: DISKS }, (_, d) => {
            const diskId = `m${i}-d${d}`;
            mkdirSync(path.join(storageRoot, 'images', diskId), { recursive: true });
            return {
              diskId,
              volumes: [2, 1, 0].map((v) => volumePath(storageRoot, diskId, `${diskId}-v${v}`)),
              sizeBytes: 16 * MiB,
            };
          }),
        );
      }
      drivers.push(driver);
      const agent = await createHostWorker(
        srv.connection,
        ns,
        { hostId, storageRoot, runDir: dir, driver },
        HOST_OPTIONS,
      );
      workers.push(...agent.workers);
    }
  }
  const runs = workers.map((w) => w.run());

  let workerRssMax = 0;
  let serverRssMax = 0;
  const sampler = setInterval(() => {
    workerRssMax = Math.max(workerRssMax, rssOf(process.pid));
    serverRssMax = Math.max(serverRssMax, srv.server.process.pid ? rssOf(srv.server.process.pid) : 0);
  }, 250);

  const failures: string[] = [];
  const latencies: number[] = [];
  const cpu0 = { worker: cpuSecOf(process.pid), server: cpuSecOf(srv.server.process.pid) };
  const t0 = Date.now();
  let lastEnd = t0;
  let done = 0;
  const cpu1 = { worker: 0, server: 0 };
  const progress = setInterval(
    () => ctx.log(`  ${kind}: ${done}/${merges} done after ${((Date.now() - t0) / 1000).toFixed(0)} s`),
    15_000,
  );
  try {
    await mapLimit(
      Array.from({ length: merges }, (_, i) => i),
      merges,
      async (i) => {
        const hostId = hostIds[i % hosts];
        const started = Date.now();
        try {
          if (kind === 'baseline') {
            const handle = await srv.client.workflow.start('BaselineMergeWorkflow', {
              taskQueue: BASELINE_ENGINE_QUEUE,
              workflowId: `baseline-${i}`,
              args: [{ hostId, disks: ['d0', 'd1'] }],
            });
            await handle.result();
          } else {
            const request: LiveMergeRequest = {
              snapshotId: `s${i}`,
              vmId: `vm${i}`,
              hostId,
              disks: [
                { diskId: `m${i}-d0`, baseVolumeId: `m${i}-d0-v0`, topVolumeId: `m${i}-d0-v1` }, // intermediate
                { diskId: `m${i}-d1`, baseVolumeId: `m${i}-d1-v1`, topVolumeId: `m${i}-d1-v2` }, // active, with pivot
              ],
            };
            const handle = await srv.client.workflow.start('LiveMergeWorkflow', {
              taskQueue: ENGINE_TASK_QUEUE,
              workflowId: liveMergeWorkflowId(`s${i}`),
              args: [request],
            });
            await handle.result();
          }
        } catch (err) {
          failures.push(`merge ${i}: ${String(err)}`);
        }
        const end = Date.now();
        latencies.push(end - started);
        lastEnd = Math.max(lastEnd, end);
        done++;
      },
    );
  } finally {
    cpu1.worker = cpuSecOf(process.pid);
    cpu1.server = cpuSecOf(srv.server.process.pid);
    clearInterval(progress);
    clearInterval(sampler);
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    await Promise.allSettled(runs);
    for (const d of drivers) await d.close();
  }
  await sleep(500);
  const wallSec = (lastEnd - t0) / 1000;
  return {
    merges,
    failed: failures.length,
    failures: failures.slice(0, 10),
    wallSec: round(wallSec, 2),
    mergesPerSec: merges / wallSec,
    e2eP50Ms: median(latencies),
    e2eP99Ms: percentile(latencies, 99),
    workerRssMaxMiB: Math.round(workerRssMax / MiB),
    serverRssMaxMiB: Math.round(serverRssMax / MiB),
    workerCpuSec: round(cpu1.worker - cpu0.worker, 1),
    serverCpuSec: round(cpu1.server - cpu0.server, 1),
  };
}

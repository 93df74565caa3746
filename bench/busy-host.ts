import * as path from 'node:path';

import { startWorkerProcess } from '../lab/devserver/worker-process';
import { type BusyHostPlan, jobKey, PROBE, runBusyHost } from '../lab/sim/busy-host';
import { forkSimHost } from '../lab/sim/forked-host';
import { ENGINE_TASK_QUEUE } from '../src/config/names';
import { HOST_JOB_WAIT_SLOTS, HOST_STEP_SLOTS } from '../src/config/policy';
import {
  type Bench,
  type BenchContext,
  type BenchServer,
  type Figure,
  median,
  MiB,
  percentile,
  round,
  rssOf,
  scratchDir,
  startBenchServer,
} from './support/common';

/**
 * One busy host: hundreds of disk merges whose block jobs run for 10 minutes (simulated driver),
 * all on one host agent with the product's worker settings, and a probe merge started while they
 * run. Figures: merges completed and failed, the time from each job's end to its chain check, the
 * probe's time, and the host agent's memory, each beside an idle host (a few merges) in the same run.
 * The engine worker runs in a process of its own, so this process's RSS is the host agent's.
 */
interface CaseResult {
  label: string;
  diskMerges: number;
  completed: number;
  failed: string[];
  probeMs: number;
  probeEndedWhileLongJobsRan: boolean;
  /** The probe's slower disk: its job's end to its chain check, while every long job ran. */
  probeJobEndToCheckMs: number;
  jobEndToCheckP50Ms: number;
  jobEndToCheckP99Ms: number;
  jobEndToCheckMaxMs: number;
  hostRssPeakMiB: number;
  wallSec: number;
}

async function runCase(srv: BenchServer, label: string, plan: BusyHostPlan): Promise<CaseResult> {
  const host = await forkSimHost(srv.server.address, srv.server.namespace, plan);
  let rssPeak = 0;
  const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssOf(host.pid))), 250);
  const t0 = Date.now();
  try {
    const outcome = await runBusyHost(srv.client, host, plan);
    const byJob = await host.jobEndToCheckMs();
    const gaps = Object.values(byJob);
    return {
      label,
      diskMerges: 2 * plan.merges,
      completed: 2 * outcome.completed,
      failed: outcome.failed,
      probeMs: outcome.probe.ms,
      probeEndedWhileLongJobsRan: outcome.probe.endedWhileLongJobsRan,
      probeJobEndToCheckMs: Math.max(...[0, 1].map((d) => byJob[jobKey(PROBE, d)] ?? NaN)),
      jobEndToCheckP50Ms: round(median(gaps), 1),
      jobEndToCheckP99Ms: round(percentile(gaps, 99), 1),
      jobEndToCheckMaxMs: round(Math.max(...gaps), 1),
      hostRssPeakMiB: round(rssPeak / MiB, 0),
      wallSec: round((Date.now() - t0) / 1000, 1),
    };
  } finally {
    clearInterval(sampler);
    await host.stop();
  }
}

export const busyHostBench: Bench = {
  name: 'busy-host',
  title: 'One busy host (simulated driver, the product worker settings)',
  async run(ctx: BenchContext) {
    const scratch = scratchDir('busy');
    const srv = await startBenchServer(scratch.dir);
    const engine = await startWorkerProcess({
      args: ['--role', 'engine', '--log-level', 'WARN'],
      address: srv.server.address,
      namespace: srv.server.namespace,
      taskQueue: ENGINE_TASK_QUEUE,
      client: srv.client,
      logFile: path.join(scratch.dir, 'engine.log'),
    });
    const plan = (label: string, merges: number): BusyHostPlan => ({
      hostId: label,
      storageRoot: path.join(scratch.dir, label),
      merges,
      jobSeconds: 600,
      // Real job length: 15 s quick, 150 s full (doubled for the last merges), longer than starting every merge takes.
      timeScale: ctx.quick ? 40 : 4,
    });
    try {
      ctx.log('  idle host: 5 merges of 2 disks');
      const idle = await runCase(srv, 'idle', plan('idle', 5));
      const merges = ctx.quick ? 60 : 250;
      ctx.log(`  busy host: ${merges} merges of 2 disks, 10 min (simulated) jobs, then a probe merge`);
      const busy = await runCase(srv, 'busy', plan('busy', merges));
      for (const c of [idle, busy]) ctx.log(`  ${JSON.stringify(c)}`);
      const figures: Figure[] = [
        {
          metric: `disk merges completed, ${busy.diskMerges} running at once on one host`,
          value: busy.completed,
          unit: 'disks',
          baseline: idle.completed,
          baselineLabel: `idle host, ${idle.diskMerges} disks`,
          target: 'all complete, none HostUnreachable',
          met: busy.completed === busy.diskMerges && busy.failed.length === 0,
        },
        {
          metric: 'failed merges',
          value: busy.failed.length,
          unit: 'merges',
          baseline: idle.failed.length,
          target: '0',
          met: busy.failed.length === 0,
        },
        {
          metric: 'job end to chain check, p99 (jobs of 10 to 20 min, ends spread out)',
          value: busy.jobEndToCheckP99Ms,
          unit: 'ms',
          baseline: idle.jobEndToCheckP99Ms,
          baselineLabel: 'idle host',
          ratio: round(busy.jobEndToCheckP99Ms / idle.jobEndToCheckP99Ms, 2),
          target: 'p99 <= 1000 ms',
          met: busy.jobEndToCheckP99Ms <= 1000,
        },
        {
          metric: 'probe: its job end to its chain check, while every long job ran',
          value: busy.probeJobEndToCheckMs,
          unit: 'ms',
          baseline: idle.probeJobEndToCheckMs,
          baselineLabel: 'idle host',
          ratio: round(busy.probeJobEndToCheckMs / idle.probeJobEndToCheckMs, 2),
          target: '<= 1000 ms',
          met: busy.probeJobEndToCheckMs <= 1000,
        },
        {
          metric: 'job end to chain check, p50',
          value: busy.jobEndToCheckP50Ms,
          unit: 'ms',
          baseline: idle.jobEndToCheckP50Ms,
        },
        {
          metric: 'probe merge started while every job ran, start to end',
          value: busy.probeMs,
          unit: 'ms',
          baseline: idle.probeMs,
          baselineLabel: 'idle host',
          ratio: round(busy.probeMs / idle.probeMs, 2),
        },
        {
          metric: 'host agent RSS, peak',
          value: busy.hostRssPeakMiB,
          unit: 'MiB',
          baseline: idle.hostRssPeakMiB,
          baselineLabel: 'idle host',
          ratio: round(busy.hostRssPeakMiB / idle.hostRssPeakMiB, 2),
        },
      ];
      return {
        figures,
        details: { slots: { steps: HOST_STEP_SLOTS, jobWaits: HOST_JOB_WAIT_SLOTS }, cases: [idle, busy] },
      };
    } finally {
      await engine.stop();
      await srv.close();
      scratch.remove();
    }
  },
};

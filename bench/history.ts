import { mkdirSync } from 'node:fs';
import * as path from 'node:path';

import { SimDriver } from '../lab/sim/sim-driver';
import { diskMergeWorkflowId, ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../src/config/names';
import type { LiveMergeRequest } from '../src/domain/input';
import { volumePath } from '../src/domain/layout';
import type { HypervisorDriver } from '../src/drivers/driver';
import { createEngineWorker } from '../src/workers/engine';
import { createHostWorker } from '../src/workers/host';
import { workflowsPath } from '../src/workers/workflow-bundle';
import {
  type Bench,
  type BenchContext,
  bundle,
  type Figure,
  MiB,
  round,
  scratchDir,
  startBenchServer,
} from './support/common';

/**
 * Constant history: a merge whose block jobs run 1 s and one whose jobs run 10 simulated minutes
 * must leave the same number of events in each DiskMergeWorkflow history: a long wait adds
 * heartbeats and polls, never events. Jobs run on SimDriver; the long one with a time scale.
 */

const RATE = 64 * MiB; // simulated host throughput, bytes/s

interface Case {
  label: string;
  jobSeconds: number;
  timeScale: number;
}

export const historyBench: Bench = {
  name: 'history',
  title: 'Constant history: events per disk merge, 1 s job vs 10 min job',
  async run(ctx: BenchContext) {
    const cases: Case[] = [
      { label: '1 s job', jobSeconds: 1, timeScale: 1 },
      { label: '10 min job', jobSeconds: 600, timeScale: ctx.quick ? 300 : 60 },
    ];
    const scratch = scratchDir('hist');
    const srv = await startBenchServer(scratch.dir);
    const workers = [
      await createEngineWorker(srv.connection, srv.server.namespace, { workflowBundle: await bundle(workflowsPath()) }),
    ];
    const drivers: SimDriver[] = [];
    const polls = new Map<string, number>();
    for (const [i, c] of cases.entries()) {
      const hostId = `hist${i}`;
      const storageRoot = path.join(scratch.dir, hostId);
      const driver = new SimDriver({ seed: 1, bytesPerSecond: RATE, timeScale: c.timeScale });
      driver.addVm(
        'vm1',
        ['disk0', 'disk1'].map((diskId) => {
          mkdirSync(path.join(storageRoot, 'images', diskId), { recursive: true });
          return {
            diskId,
            volumes: ['v2', 'v1', 'v0'].map((v) => volumePath(storageRoot, diskId, `${diskId}-${v}`)),
            sizeBytes: c.jobSeconds * RATE,
          };
        }),
      );
      drivers.push(driver);
      polls.set(hostId, 0);
      // Counts the job-list reads (the wait's polls) of this host.
      const counting: HypervisorDriver = Object.assign(Object.create(driver) as SimDriver, {
        listJobs: (vmId: string) => {
          polls.set(hostId, (polls.get(hostId) ?? 0) + 1);
          return driver.listJobs(vmId);
        },
      });
      workers.push(
        ...(
          await createHostWorker(srv.connection, srv.server.namespace, {
            hostId,
            storageRoot,
            runDir: scratch.dir,
            driver: counting,
            workflowBundle: await bundle(workflowsPath()),
          })
        ).workers,
      );
    }
    const runs = workers.map((w) => w.run());
    try {
      const rows = [];
      for (const [i, c] of cases.entries()) {
        const hostId = `hist${i}`;
        const snapshotId = `hist-${i}`;
        const request: LiveMergeRequest = {
          snapshotId,
          vmId: 'vm1',
          hostId,
          disks: [
            { diskId: 'disk0', baseVolumeId: 'disk0-v0', topVolumeId: 'disk0-v1' }, // intermediate
            { diskId: 'disk1', baseVolumeId: 'disk1-v1', topVolumeId: 'disk1-v2' }, // active, with pivot
          ],
          options: { pollIntervalMs: 500, bandwidthBytesPerSec: 0 },
        };
        ctx.log(`history: ${c.label} (${c.jobSeconds} simulated s at time scale ${c.timeScale})`);
        const t0 = Date.now();
        const handle = await srv.client.workflow.start('LiveMergeWorkflow', {
          taskQueue: ENGINE_TASK_QUEUE,
          workflowId: liveMergeWorkflowId(snapshotId),
          args: [request],
        });
        await handle.result();
        const realSec = (Date.now() - t0) / 1000;
        const count = async (workflowId: string) =>
          (await srv.client.workflow.getHandle(workflowId).fetchHistory()).events?.length ?? 0;
        rows.push({
          ...c,
          realSeconds: round(realSec, 2),
          polls: polls.get(hostId),
          eventsIntermediate: await count(diskMergeWorkflowId(snapshotId, 'disk0')),
          eventsActive: await count(diskMergeWorkflowId(snapshotId, 'disk1')),
          eventsParent: await count(liveMergeWorkflowId(snapshotId)),
        });
      }
      const [short, long] = rows;
      const fig = (
        metric: string,
        key: 'eventsIntermediate' | 'eventsActive' | 'eventsParent',
        target: boolean,
      ): Figure => ({
        metric,
        value: long[key],
        unit: 'events',
        baseline: short[key],
        baselineLabel: '1 s job',
        ratio: round(long[key] / short[key], 3),
        ...(target ? { target: 'equal (ratio 1.00)', met: long[key] === short[key] } : {}),
      });
      const figures: Figure[] = [
        fig('DiskMergeWorkflow events, 10 min intermediate commit', 'eventsIntermediate', true),
        fig('DiskMergeWorkflow events, 10 min active commit (pivot)', 'eventsActive', true),
        fig('LiveMergeWorkflow events (parent), 10 min jobs', 'eventsParent', false),
        {
          metric: 'job-list polls during the merge, 10 min jobs',
          value: long.polls ?? 0,
          unit: 'polls',
          baseline: short.polls,
          baselineLabel: '1 s job',
        },
      ];
      return { figures, details: { rateBytesPerSec: RATE, pollIntervalMs: 500, cases: rows } };
    } finally {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await Promise.allSettled(runs);
      for (const d of drivers) await d.close();
      await srv.close();
      scratch.remove();
    }
  },
};

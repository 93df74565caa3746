import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { Worker } from '@temporalio/worker';

import { createLabVm, type CreateLabVmOptions, destroyLabVm, type LabVm } from '../../lab/vm';
import type { HostActivities } from '../../src/activities';
import { blockJobId } from '../../src/config/names';
import type { HypervisorDriver } from '../../src/drivers/driver';
import type { Reclaimer } from '../../src/storage/reclaim';
import { createEngineWorker } from '../../src/workers/engine';
import { createHostWorker } from '../../src/workers/host';
import { workflowsPath } from '../../src/workers/workflow-bundle';
import { type BenchServer, bundle, scratchDir, startBenchServer } from './common';

const run = promisify(execFile);

export const HOST_ID = 'bench-host';

/** When each host step of a disk's merge started and ended (Date.now()), keyed by block job id. */
export interface StepTimes {
  waitEnd?: number;
  verifyStart?: number;
}

/**
 * The product on one machine for the QEMU benchmarks: a headless dev server, the engine worker
 * and one host agent over QMP, its activities wrapped only to note when the wait ended and when
 * the chain check started.
 */
export interface QemuStack {
  srv: BenchServer;
  storageRoot: string;
  runDir: string;
  driver: HypervisorDriver;
  /** The host agent's: frees deleted volumes' space after their delete step. */
  reclaimer: Reclaimer;
  times: Map<string, StepTimes>;
  labVm(opts: Omit<CreateLabVmOptions, 'storageRoot' | 'runDir'>): Promise<LabVm>;
  close(): Promise<void>;
}

export async function startQemuStack(prefix: string): Promise<QemuStack> {
  const scratch = scratchDir(prefix);
  const storageRoot = path.join(scratch.dir, 's');
  const runDir = path.join(scratch.dir, 'r');
  const srv = await startBenchServer(scratch.dir);
  const times = new Map<string, StepTimes>();
  const note = (jobId: string, t: Partial<StepTimes>): void => {
    times.set(jobId, { ...times.get(jobId), ...t });
  };
  const wrap = (a: HostActivities): HostActivities => ({
    ...a,
    waitForBlockJob: async (input) => {
      const end = await a.waitForBlockJob(input);
      note(input.jobId, { waitEnd: Date.now() });
      return end;
    },
    verifyChain: async (input) => {
      note(blockJobId(input.diskId, input.topVolumeId), { verifyStart: Date.now() });
      return a.verifyChain(input);
    },
  });
  const engine = await createEngineWorker(srv.connection, srv.server.namespace, {
    workflowBundle: await bundle(workflowsPath()),
  });
  const host = await createHostWorker(srv.connection, srv.server.namespace, {
    hostId: HOST_ID,
    storageRoot,
    runDir,
    wrapActivities: wrap,
    workflowBundle: await bundle(workflowsPath()),
  });
  const workers: Worker[] = [engine, ...host.workers];
  const runs = workers.map((w) => w.run());
  const vms: string[] = [];
  return {
    srv,
    storageRoot,
    runDir,
    driver: host.driver,
    reclaimer: host.reclaimer,
    times,
    async labVm(opts) {
      // The host agent's storage root: one lab VM at a time runs on it (destroy the last one first).
      const vm = await createLabVm({ guest: false, ...opts, storageRoot, runDir });
      vms.push(vm.vmId);
      // The layers' data on disk before anything is timed: no write-back of it during a commit.
      await run('sync', []);
      return vm;
    },
    async close() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await Promise.allSettled(runs);
      await host.close();
      for (const vmId of vms) await destroyLabVm(runDir, vmId).catch(() => undefined);
      await srv.close();
      scratch.remove();
    },
  };
}

export async function destroyVm(stack: QemuStack, vmId: string): Promise<void> {
  await destroyLabVm(stack.runDir, vmId);
}

import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { WorkflowHandle } from '@temporalio/client';

import { Cluster, type ClusterHost } from '../../lab/cluster/cluster';
import { createHostLabVm } from '../../lab/cluster/lab-vm';
import { removePostgresDir } from '../../lab/cluster/postgres';
import { destroyLabVm, type LabVm, verifyLabVm } from '../../lab/vm';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import type { LiveMergeRequest } from '../../src/domain/input';
import { volumePath } from '../../src/domain/layout';
import type { LiveMergeWorkflow } from '../../src/workflows';
import { watchJobs } from '../harness/jobs';
import { mergeRequest } from '../harness/merge-request';
import { recordRecovery } from '../harness/scenario';
import { until } from '../harness/until';

export const MiB = 1024 * 1024;
export { recordRecovery, until };

/**
 * The cluster of lab/cluster on a temp dir, as make cluster runs it (fewer hosts when a test needs
 * fewer). Its PostgreSQL directory is outside that dir (lab/cluster/postgres.ts), deleted with it.
 */
export async function startTestCluster(hostIds: string[], engines: number): Promise<Cluster> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lm-cluster-'));
  try {
    return await Cluster.start({ dir, hostIds, engines });
  } catch (err) {
    if (!process.env.LIVE_MERGE_KEEP_FAULT_DIRS) removeClusterDirs(dir);
    throw err;
  }
}

export async function stopTestCluster(cluster: Cluster | undefined): Promise<void> {
  if (!cluster) return;
  await cluster.stop();
  if (!process.env.LIVE_MERGE_KEEP_FAULT_DIRS) removeClusterDirs(cluster.opts.dir);
}

function removeClusterDirs(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  removePostgresDir(dir);
}

export function host(cluster: Cluster, hostId: string): ClusterHost {
  const h = cluster.hosts.get(hostId);
  if (!h) throw new Error(`no host ${hostId}`);
  return h;
}

/** A paused lab VM (no guest) with 2 disks x 3 volumes of `layerDataMiB` of data per layer, on `hostId`. */
export function hostVm(cluster: Cluster, hostId: string, vmId: string, layerDataMiB: number): Promise<LabVm> {
  return createHostLabVm(host(cluster, hostId), {
    vmId,
    disks: 2,
    volumes: 3,
    layerDataMiB,
    sizeMiB: 5 * layerDataMiB + 8,
  });
}

/** A merge on `hostId` that commits disk0's middle volume (intermediate) and disk1's top (active, pivot). */
export interface RunningMerge {
  vm: LabVm;
  hostId: string;
  request: LiveMergeRequest;
  handle: WorkflowHandle<typeof LiveMergeWorkflow>;
  jobs: Awaited<ReturnType<typeof watchJobs>>;
}

export async function startHostMerge(
  cluster: Cluster,
  hostId: string,
  snapshotId: string,
  layerDataMiB: number,
  bandwidthBytesPerSec: number,
): Promise<RunningMerge> {
  const vm = await hostVm(cluster, hostId, `vm-${snapshotId}`, layerDataMiB);
  const request = { ...mergeRequest(vm, snapshotId, ['intermediate', 'active'], { bandwidthBytesPerSec }), hostId };
  const jobs = await watchJobs(host(cluster, hostId).runDir, vm.vmId);
  const handle = await cluster.client.workflow.start<typeof LiveMergeWorkflow>('LiveMergeWorkflow', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId(snapshotId),
    args: [request],
  });
  return { vm, hostId, request, handle, jobs };
}

/** Both disks' block jobs are running in QEMU. */
export async function bothJobsRunning(m: RunningMerge): Promise<void> {
  await until(async () => (await m.jobs.running()) === 2, 120_000);
}

/**
 * The merge ended right: both disks merged, QEMU created exactly one block job per disk, the
 * tops are gone from the chains and the storage, every other volume is still there, data intact.
 */
export async function expectMergedRight(cluster: Cluster, m: RunningMerge): Promise<void> {
  const result = await m.handle.result();
  await m.jobs.close();
  expect(result.disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);
  expect([...m.jobs.created].sort()).toEqual(['lm.disk0.d0v1', 'lm.disk1.d1v2']);
  const h = host(cluster, m.hostId);
  const report = await verifyLabVm(h.runDir, m.vm.vmId);
  expect(report.ok).toBe(true);
  expect(report.disks.map((d) => d.chain)).toEqual([
    ['d0v2', 'd0v0'],
    ['d1v1', 'd1v0'],
  ]);
  const tops = m.request.disks.map((d) => d.topVolumeId);
  for (const d of m.vm.disks) {
    for (const v of d.volumeIds) {
      expect([v, existsSync(volumePath(h.storageRoot, d.diskId, v))]).toEqual([v, !tops.includes(v)]);
    }
  }
  await destroyLabVm(h.runDir, m.vm.vmId);
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Destroys every lab VM left on the cluster's hosts (a failed test's), so the next test has the storage roots. */
export async function destroyHostVms(cluster: Cluster | undefined): Promise<void> {
  for (const h of cluster?.hosts.values() ?? []) {
    const vmIds = existsSync(h.runDir) ? readdirSync(h.runDir) : [];
    for (const vmId of vmIds) await destroyLabVm(h.runDir, vmId).catch(() => undefined);
  }
}

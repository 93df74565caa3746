import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';

import type { WorkflowHandle } from '@temporalio/client';

import { createLabVm, type LabVm, verifyLabVm } from '../../lab/vm';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import type { LiveMergeRequest } from '../../src/domain/input';
import { volumePath } from '../../src/domain/layout';
import { reclaimPath } from '../../src/storage/reclaim';
export { mergeRequest } from './merge-request';
import type { LiveMergeWorkflow } from '../../src/workflows';
import type { FaultStack } from './process-stack';

export const MiB = 1024 * 1024;

export function labVm(
  stack: FaultStack,
  vmId: string,
  disks: number,
  volumes: number,
  layerDataMiB = 1,
  idPrefix = '',
): Promise<LabVm> {
  return createLabVm({
    storageRoot: stack.storageRoot,
    runDir: stack.runDir,
    vmId,
    disks,
    volumes,
    layerDataMiB,
    idPrefix,
    sizeMiB: (volumes + 2) * layerDataMiB + 8,
    guest: false, // paused, no guest OS: test/guest/ has the merges with a writing guest
  });
}

export function startMerge(
  stack: FaultStack,
  request: LiveMergeRequest,
): Promise<WorkflowHandle<typeof LiveMergeWorkflow>> {
  return stack.client.workflow.start<typeof LiveMergeWorkflow>('LiveMergeWorkflow', {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId(String(request.snapshotId)),
    args: [request],
  });
}

/** The invariant on a merged disk: top gone from the chain and the storage, data intact. */
export async function expectMerged(stack: FaultStack, vm: LabVm, request: LiveMergeRequest): Promise<void> {
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.ok).toBe(true);
  for (const d of request.disks) {
    const chain = report.disks.find((x) => x.diskId === d.diskId)!.chain;
    expect(chain).not.toContain(d.topVolumeId);
    expect(chain).toContain(d.baseVolumeId);
    expect(existsSync(volumePath(stack.storageRoot, d.diskId, d.topVolumeId))).toBe(false);
  }
  expectOnlyTopsDeleted(
    stack,
    vm,
    request.disks.map((d) => d.topVolumeId),
  );
}

/** The deleted tops' space is freed: no reclaim name is left once the host agent got to it. */
export async function expectSpaceReclaimed(
  stack: FaultStack,
  request: LiveMergeRequest,
  withinMs = 10_000,
): Promise<void> {
  const left = (): string[] =>
    request.disks
      .map((d) => reclaimPath(volumePath(stack.storageRoot, d.diskId, d.topVolumeId)))
      .filter((f) => existsSync(f));
  const until = Date.now() + withinMs;
  while (left().length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  expect(left()).toEqual([]);
}

/** Every volume the lab made still exists, but the named tops: nothing else was deleted. */
export function expectOnlyTopsDeleted(stack: FaultStack, vm: LabVm, tops: string[]): void {
  for (const d of vm.disks) {
    for (const v of d.volumeIds) {
      expect([v, existsSync(volumePath(stack.storageRoot, d.diskId, v))]).toEqual([v, !tops.includes(v)]);
    }
  }
}

/** Writes a scenario's measured recovery time to test-artifacts/fault-recovery.jsonl. */
export function recordRecovery(scenario: string, recoveryMs: number, extra: Record<string, unknown> = {}): void {
  const dir = path.resolve(__dirname, '../../test-artifacts');
  mkdirSync(dir, { recursive: true });
  appendFileSync(
    path.join(dir, 'fault-recovery.jsonl'),
    `${JSON.stringify({ scenario, recoveryMs, at: new Date().toISOString(), ...extra })}\n`,
  );
  console.log(`recovery ${scenario}: ${recoveryMs} ms`);
}

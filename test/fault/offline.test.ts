import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

import { WorkflowFailedError } from '@temporalio/client';

import { imageCommitPid, type LabVm, lockedImageCommitPid, startLabVm, stopLabVm, verifyLabVm } from '../../lab/vm';
import type { LiveMergeRequest } from '../../src/domain/input';
import { volumePath } from '../../src/domain/layout';
import type { LiveMergeResult } from '../../src/domain/outcome';
import { progressQuery } from '../../src/workflows/definitions';
import { stackPerFile } from '../harness/file-stack';
import type { FaultStack } from '../harness/process-stack';
import { expectOnlyTopsDeleted, mergeRequest, recordRecovery, startMerge } from '../harness/scenario';
import { until } from '../harness/until';

/**
 * A VM that is shut off: the same LiveMergeWorkflow request removes the snapshot offline
 * (qemu-img commit, then the layer above rebased or the base reported), and names the volume
 * each disk starts from. The VM then starts from those volumes, its data is intact, `qemu-img
 * check` is clean, and only the tops are gone. Raw-QEMU lab VMs: their definition is the caller's.
 */

jest.setTimeout(240_000);

const run = promisify(execFile);

/** Starts the stopped VM from the volumes the merge named, and checks data, chain and images. */
async function expectStartsFromResult(
  stack: FaultStack,
  vm: LabVm,
  request: LiveMergeRequest,
  result: LiveMergeResult,
): Promise<void> {
  const active = Object.fromEntries(result.disks.map((d) => [d.diskId, d.activeVolumeId!]));
  for (const d of result.disks) {
    // topDeleted is false after an agent killed past the delete: its retry found the top gone.
    expect(d).toMatchObject({ outcome: 'merged', mode: 'offline' });
    expect(d.chainAfter).not.toContain(request.disks.find((x) => x.diskId === d.diskId)!.topVolumeId);
  }
  await startLabVm(stack.runDir, vm.vmId, { activeVolumes: active });
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.disks.map((d) => [d.diskId, d.ok, d.chainDetail])).toEqual(
    report.disks.map((d) => [d.diskId, true, undefined]),
  );
  for (const d of report.disks) expect(d.chain[0]).toBe(active[d.diskId]);
  await stopLabVm(stack.runDir, vm.vmId);
  for (const d of vm.disks)
    for (const v of d.volumeIds) {
      const image = volumePath(stack.storageRoot, d.diskId, v);
      if (existsSync(image)) await run('qemu-img', ['check', '-q', image]);
    }
  expectOnlyTopsDeleted(
    stack,
    vm,
    request.disks.map((d) => d.topVolumeId),
  );
}

// One file.stack for the file: each test starts the host agent with its holds.
const file = stackPerFile();
/** A stopped lab VM of 1 or 2 disks × 3 volumes, destroyed after the test. */
async function stoppedVm(vmId: string, disks: number, layerDataMiB: number, idPrefix: string): Promise<LabVm> {
  const vm = await file.labVm(vmId, disks, 3, layerDataMiB, idPrefix);
  await stopLabVm(file.stack.runDir, vm.vmId);
  return vm;
}

describe('a shut-off VM (raw QEMU, caller-held definition)', () => {
  test('both commit kinds: merged offline, the result names the volume each disk starts from', async () => {
    const vm = await stoppedVm('vm-off-kinds', 2, 2, 'kinds-');
    const request = mergeRequest(vm, 'snap-off-kinds', ['intermediate', 'active']);
    const handle = await startMerge(file.stack, request);
    const result = await handle.result();
    expect(result.disks.map((d) => [d.diskId, d.commitKind, d.activeVolumeId])).toEqual([
      [vm.disks[0].diskId, 'intermediate', vm.disks[0].volumeIds[2]],
      [vm.disks[1].diskId, 'active', vm.disks[1].volumeIds[1]],
    ]);
    const progress = await handle.query(progressQuery);
    expect(progress.disks.map((d) => [d.phase, d.mode, d.activeVolumeId])).toEqual([
      ['merged', 'offline', vm.disks[0].volumeIds[2]],
      ['merged', 'offline', vm.disks[1].volumeIds[1]],
    ]);
    const attrs = (await handle.describe()).searchAttributes;
    expect(attrs.MergeMode).toEqual(['offline']);
    expect([...(attrs.ActiveVolumes as string[])].sort()).toEqual(
      [`${vm.disks[0].diskId}=${vm.disks[0].volumeIds[2]}`, `${vm.disks[1].diskId}=${vm.disks[1].volumeIds[1]}`].sort(),
    );
    await expectStartsFromResult(file.stack, vm, request, result);
  });

  test('a VM start attempted during the commit fails on the image locks; the merge completes', async () => {
    const vm = await stoppedVm('vm-off-start', 1, 4, 'start-');
    const request = mergeRequest(vm, 'snap-off-start', ['active'], { bandwidthBytesPerSec: 1024 * 1024 });
    const top = volumePath(file.stack.storageRoot, vm.disks[0].diskId, request.disks[0].topVolumeId);
    const handle = await startMerge(file.stack, request);
    // The commit frozen while the start is tried: on a loaded machine a start can take longer than
    // the commit, and would then find no lock to fail on.
    const commit = await until(() => lockedImageCommitPid(top), 60_000, 20);
    process.kill(commit, 'SIGSTOP');
    try {
      await expect(startLabVm(file.stack.runDir, vm.vmId)).rejects.toThrow(/lock/);
    } finally {
      process.kill(commit, 'SIGCONT');
    }
    const result = await handle.result();
    expect(result.disks[0].activeVolumeId).toBe(request.disks[0].baseVolumeId);
    await expectStartsFromResult(file.stack, vm, request, result);
  });
});

describe('a host agent killed during each offline step', () => {
  test.each([
    ['during qemu-img commit', 'qemu-img', 'intermediate', 1],
    ['after the commit', 'after:offlineCommit', 'active', 2],
    ['after the rebase', 'after:offlineRelink', 'intermediate', 3],
    ['after the chain check', 'after:verifyChain', 'intermediate', 4],
    ['after the delete', 'after:deleteVolume', 'active', 5],
  ] as const)('killed %s: the restarted agent finishes the merge', async (_name, point, kind, n) => {
    if (point !== 'qemu-img') await file.stack.restartHost([point]);
    const vm = await stoppedVm(`vm-off-kill-${n}`, 1, 4, `k${n}-`);
    const request = mergeRequest(vm, `snap-off-kill-${point.replace(':', '-')}`, [kind], {
      bandwidthBytesPerSec: 1024 * 1024,
    });
    const top = volumePath(file.stack.storageRoot, vm.disks[0].diskId, request.disks[0].topVolumeId);
    const handle = await startMerge(file.stack, request);
    if (point === 'qemu-img') await until(() => imageCommitPid(top), 60_000, 20);
    else await file.stack.reached(point);
    await file.stack.host!.kill();
    // Its qemu-img dies with it (parent-death signal): nothing holds the images' locks.
    await until(async () => (await imageCommitPid(top)) === undefined || undefined, 10_000, 20);
    const restarted = Date.now();
    await file.stack.startHost();
    const result = await handle.result();
    recordRecovery(`offline: host agent killed ${point} (${kind})`, Date.now() - restarted);
    await expectStartsFromResult(file.stack, vm, request, result);
  });
});

describe('a VM started between two steps', () => {
  test.each(['intermediate', 'active'] as const)(
    '%s: the next step refuses with VmStarted, the top is kept, and a new merge runs live',
    async (kind) => {
      await file.stack.restartHost(['after:offlineCommit']);
      const vm = await stoppedVm(`vm-off-between-${kind}`, 1, 2, `b${kind[0]}-`);
      const request = mergeRequest(vm, `snap-off-between-${kind}`, [kind]);
      const handle = await startMerge(file.stack, request);
      await file.stack.reached('after:offlineCommit');
      // The caller starts the VM from the definition it holds: the chain as before the merge.
      await startLabVm(file.stack.runDir, vm.vmId);
      file.stack.release('after:offlineCommit');
      const err: unknown = await handle.result().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(WorkflowFailedError);
      expect(String((err as WorkflowFailedError).cause?.message)).toMatch(/VmStarted|started during the offline merge/);
      expect(existsSync(volumePath(file.stack.storageRoot, vm.disks[0].diskId, request.disks[0].topVolumeId))).toBe(
        true,
      );
      expect((await verifyLabVm(file.stack.runDir, vm.vmId)).ok).toBe(true);

      const again = await startMerge(file.stack, { ...request, snapshotId: `${request.snapshotId}-again` });
      const result = await again.result();
      expect(result.disks[0]).toMatchObject({ outcome: 'merged', mode: 'live', commitKind: kind });
      expect((await verifyLabVm(file.stack.runDir, vm.vmId)).ok).toBe(true);
      expectOnlyTopsDeleted(file.stack, vm, [request.disks[0].topVolumeId]);
      await stopLabVm(file.stack.runDir, vm.vmId);
    },
  );
});

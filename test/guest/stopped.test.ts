/**
 * A VM that stops in the middle of a merge, its guest writing through it: the same merge finishes
 * offline and names the volume each disk starts from. QEMU is killed (or the guest powers off) at
 * each point of the job; after each, every write the guest acknowledged is found in the chain the
 * result names, every volume checks clean, only the tops are gone, and the VM starts again from
 * the volumes named. Where the pivot's outcome cannot be told, both volumes are kept.
 */
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { WorkflowFailedError } from '@temporalio/client';

import { checkGuestWrites, checkImage, ensureGuestArtifacts } from '../../lab/guest';
import { imageCommitPid, type LabVm, queryLabVmDevices, startLabVm, stopLabVm, verifyLabVm } from '../../lab/vm';
import type { CommitKind } from '../../src/domain/commit';
import type { LiveMergeRequest } from '../../src/domain/input';
import { imageDir, volumePath } from '../../src/domain/layout';
import type { DiskMerged, LiveMergeResult } from '../../src/domain/outcome';
import { progressQuery } from '../../src/workflows/definitions';
import { watchJobs } from '../harness/jobs';
import { FaultStack } from '../harness/process-stack';
import { expectOnlyTopsDeleted, mergeRequest, recordRecovery, startMerge } from '../harness/scenario';
import { until } from '../harness/until';
import { acksPerDisk, alive, BANDWIDTH, expectGuestWritesKept, GuestVms, waitForWrites } from './guest-vm';

jest.setTimeout(240_000);

let stack: FaultStack;
const vms = new GuestVms(() => stack);

beforeAll(async () => {
  await ensureGuestArtifacts();
  stack = await new FaultStack().start();
}, 300_000);

afterEach(async () => {
  await vms.cleanup();
  if (stack?.host) await stack.restartHost();
});
afterAll(async () => stack?.close());

/** The VM's QEMU SIGKILLed, and gone. */
async function killQemu(vm: LabVm): Promise<void> {
  process.kill(vm.pid, 'SIGKILL');
  await until(async () => !(await alive(vm.pid)), 10_000);
}

/** The pivot record the host keeps for a top, as JSON, or undefined. */
function pivotRecord(diskId: string, top: string): { requestedAt: string; confirmedAt?: string } | undefined {
  const file = path.join(imageDir(stack.storageRoot, diskId), `.${top}.pivot.json`);
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { requestedAt: string }) : undefined;
}

/**
 * `qemu-img check` of every volume still there: no corruption. After a QEMU that was killed,
 * leaked clusters alone pass (counted, space only: qcow2 raises a refcount before it maps the cluster).
 */
async function expectClean(vm: LabVm, killed: boolean): Promise<void> {
  for (const d of vm.disks)
    for (const v of d.volumeIds) {
      const file = volumePath(stack.storageRoot, d.diskId, v);
      if (existsSync(file))
        expect([file, await checkImage(file, { allowLeaks: killed })]).toEqual([
          file,
          expect.objectContaining({ ok: true }),
        ]);
    }
}

/**
 * The merge finished offline: each disk merged with the volume expected, every acknowledged write
 * found in the chains the result names, every volume clean, only the tops gone, and the VM starts
 * from the volumes named with its data intact.
 */
async function expectFinishedOffline(
  scenario: string,
  vm: LabVm,
  request: LiveMergeRequest,
  result: LiveMergeResult,
  expected: Array<Pick<DiskMerged, 'diskId' | 'activeVolumeId' | 'stoppedMidMerge'>>,
  during: number[],
  stoppedCleanly: boolean,
): Promise<void> {
  expect(result.disks.map((d) => [d.diskId, d.outcome, d.mode, d.activeVolumeId, d.stoppedMidMerge])).toEqual(
    expected.map((e) => [e.diskId, 'merged', 'offline', e.activeVolumeId, e.stoppedMidMerge]),
  );
  const activeVolumes = Object.fromEntries(result.disks.map((d) => [d.diskId, d.activeVolumeId!]));
  const report = await checkGuestWrites(stack.runDir, vm.vmId, { activeVolumes });
  expectGuestWritesKept(scenario, report, during, stoppedCleanly);
  await expectClean(vm, !stoppedCleanly);
  expectOnlyTopsDeleted(
    stack,
    vm,
    request.disks.map((d) => d.topVolumeId),
  );
  const started = await startLabVm(stack.runDir, vm.vmId, { activeVolumes });
  for (const d of result.disks)
    expect(started.chains[d.diskId][started.chains[d.diskId].length - 1]).toBe(d.activeVolumeId);
  expect((await verifyLabVm(stack.runDir, vm.vmId)).ok).toBe(true);
  await stopLabVm(stack.runDir, vm.vmId);
}

/**
 * A merge of the VM `gs-<name>` started while its guest writes, at the guests' job speed;
 * `during()` counts the writes acknowledged per disk since the start.
 */
async function mergeWhileWriting(name: string, kinds: CommitKind[]) {
  const vm = await vms.create(`gs-${name}`);
  await waitForWrites(vm);
  const request = mergeRequest(vm, `snap-gs-${name}`, kinds, { bandwidthBytesPerSec: BANDWIDTH });
  const before = await acksPerDisk(vm);
  const handle = await startMerge(stack, request);
  const during = async (): Promise<number[]> => (await acksPerDisk(vm)).map((n, i) => n - before[i]);
  return { vm, request, handle, during };
}

/** Resolves once the guest acknowledged `n` more writes on every disk. */
async function writesMore(vm: LabVm, n: number): Promise<void> {
  await waitForWrites(
    vm,
    (await acksPerDisk(vm)).map((k) => k + n),
  );
}

/** Both disks of an intermediate and an active commit finished offline, before any pivot. */
const BOTH_BEFORE_PIVOT = [
  { diskId: 'disk0', activeVolumeId: 'd0v2', stoppedMidMerge: { topStale: false } },
  { diskId: 'disk1', activeVolumeId: 'd1v1', stoppedMidMerge: { topStale: false } },
];

test('QEMU killed mid-job, an intermediate and an active commit, then the host agent during the offline finish: both committed offline', async () => {
  const { vm, request, handle, during: writtenSince } = await mergeWhileWriting('mid', ['intermediate', 'active']);
  const jobs = await watchJobs(stack.runDir, vm.vmId);
  await until(async () => (await jobs.running()) === 2);
  await jobs.close();
  await killQemu(vm);
  const during = await writtenSince();
  // The active disk's offline commit runs (qemu-img at the merge's 4 MiB/s): the agent dies under it.
  const top = volumePath(stack.storageRoot, 'disk1', 'd1v2');
  await until(async () => (await imageCommitPid(top)) !== undefined, 60_000);
  await stack.host!.kill();
  await until(async () => (await imageCommitPid(top)) === undefined, 10_000);
  await stack.startHost();
  const restarted = Date.now();
  const result = await handle.result();
  recordRecovery(
    'guest: host agent killed during the offline finish of a VM stopped mid-merge',
    Date.now() - restarted,
  );
  // No pivot was asked for: the tops held the newest data and were committed.
  expect([pivotRecord('disk0', 'd0v1'), pivotRecord('disk1', 'd1v2')]).toEqual([undefined, undefined]);
  await expectFinishedOffline(
    'guest: QEMU killed mid-job (intermediate, active), then the host agent during the offline finish',
    vm,
    request,
    result,
    BOTH_BEFORE_PIVOT,
    during,
    false,
  );
  const progress = await handle.query(progressQuery);
  expect(progress.disks.map((d) => [d.phase, d.mode, d.activeVolumeId, d.stoppedMidMerge])).toEqual([
    ['merged', 'offline', 'd0v2', { topStale: false }],
    ['merged', 'offline', 'd1v1', { topStale: false }],
  ]);
  const attrs = (await handle.describe()).searchAttributes;
  expect([attrs.MergeMode, attrs.ActiveVolumes]).toEqual([['offline'], ['disk0=d0v2', 'disk1=d1v1']]);
});

test('the guest powers off by itself mid-job: finished offline, every write it acknowledged is kept', async () => {
  const { vm, request, handle, during: writtenSince } = await mergeWhileWriting('off', ['intermediate', 'active']);
  const jobs = await watchJobs(stack.runDir, vm.vmId);
  await until(async () => (await jobs.running()) === 2);
  await jobs.close();
  expect(await stopLabVm(stack.runDir, vm.vmId)).toBe('guest-powered-off');
  const during = await writtenSince();
  const result = await handle.result();
  await expectFinishedOffline(
    'guest: powered off mid-job (intermediate, active)',
    vm,
    request,
    result,
    BOTH_BEFORE_PIVOT,
    during,
    true,
  );
});

test('QEMU killed in ready, before the pivot was asked for: the top is committed offline', async () => {
  const { vm, request, handle, during: writtenSince } = await mergeWhileWriting('ready', ['active']);
  const jobs = await watchJobs(stack.runDir, vm.vmId);
  await until(async () => (await jobs.running()) === 1);
  // The merge step has returned (a step the frozen agent never finished is retried, and its retry
  // would find a stopped VM: the plain offline path, with no stoppedMidMerge to report).
  await until(async () => (await handle.query(progressQuery)).disks[0]?.phase === 'waiting', 30_000);
  // The host agent frozen, QEMU takes the job to ready by itself: nobody asks for the pivot.
  const agent = stack.host!.process.pid!;
  process.kill(agent, 'SIGSTOP');
  try {
    await until(async () => (await jobs.list()).some((j) => j.status === 'ready'), 60_000);
    await jobs.close();
    await writesMore(vm, 2);
    await killQemu(vm);
  } finally {
    process.kill(agent, 'SIGCONT');
  }
  const during = await writtenSince();
  const result = await handle.result();
  expect(pivotRecord('disk0', 'd0v2')).toBeUndefined();
  await expectFinishedOffline(
    'guest: QEMU killed in ready (active)',
    vm,
    request,
    result,
    [{ diskId: 'disk0', activeVolumeId: 'd0v1', stoppedMidMerge: { topStale: false } }],
    during,
    false,
  );
});

test('QEMU killed right after the pivot: the stale top is not committed, the base is named, the writes since are kept', async () => {
  await stack.restartHost(['before:deleteVolume']);
  const { vm, request, handle, during: writtenSince } = await mergeWhileWriting('pivot', ['active']);
  await stack.reached('before:deleteVolume');
  // Pivoted and confirmed: the device writes to the base, d0v1, and the record says so.
  expect((await queryLabVmDevices(stack.runDir, vm.vmId))[0].activePath).toBe(
    volumePath(stack.storageRoot, 'disk0', 'd0v1'),
  );
  expect(pivotRecord('disk0', 'd0v2')?.confirmedAt).toEqual(expect.any(String));
  // The guest writes on to the base before QEMU dies.
  await writesMore(vm, 3);
  await killQemu(vm);
  const during = await writtenSince();
  await stack.restartHost();
  const result = await handle.result();
  await expectFinishedOffline(
    'guest: QEMU killed right after the pivot',
    vm,
    request,
    result,
    [{ diskId: 'disk0', activeVolumeId: 'd0v1', stoppedMidMerge: { topStale: true } }],
    during,
    false,
  );
  expect(pivotRecord('disk0', 'd0v2')).toBeUndefined();
});

test('QEMU killed between the pivot request and its confirmation: PivotOutcomeUnknown, both kept, the writes in the base', async () => {
  await stack.restartHost(['after:completeJob']);
  const { vm, handle, during: writtenSince } = await mergeWhileWriting('unknown', ['active']);
  await stack.reached('after:completeJob');
  // QEMU took the request and pivoted; the agent has not seen the job conclude.
  await until(
    async () =>
      (await queryLabVmDevices(stack.runDir, vm.vmId))[0].activePath === volumePath(stack.storageRoot, 'disk0', 'd0v1'),
  );
  expect(pivotRecord('disk0', 'd0v2')).toEqual({ topVolumeId: 'd0v2', requestedAt: expect.any(String) });
  await writesMore(vm, 3);
  await killQemu(vm);
  const during = await writtenSince();
  await stack.restartHost();
  const err = await handle.result().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  expect(String((err as WorkflowFailedError).cause?.message)).toMatch(
    /disk disk0: disk disk0: the VM stopped between the pivot request \(.*\) and QEMU's confirmation, and d0v2 and d0v1 hold different data: if QEMU pivoted, the guest's newest writes are in d0v1 \(start from it\); if not, in d0v2 \(start from it\)\. .*both are kept, nothing was written or deleted; top volume d0v2 kept/,
  );
  const progress = await handle.query(progressQuery);
  expect(progress.disks[0]).toMatchObject({ phase: 'failed' });
  expectOnlyTopsDeleted(stack, vm, []);
  await expectClean(vm, true);
  // QEMU did pivot here: the base holds every write the guest acknowledged, the ones after the pivot too.
  const report = await checkGuestWrites(stack.runDir, vm.vmId, { activeVolumes: { disk0: 'd0v1' } });
  expectGuestWritesKept('guest: QEMU killed between the pivot request and its confirmation', report, during, false);
});

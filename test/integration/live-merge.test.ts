import { existsSync } from 'node:fs';

import { Context } from '@temporalio/activity';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';

import { checkRegion, createLabVm, destroyLabVm, verifyLabVm } from '../../lab/vm';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import type { LiveMergeRequest } from '../../src/domain/input';
import { auxQmpSocketPath, volumePath } from '../../src/domain/layout';
import { QmpClient } from '../../src/drivers/qmp/client';
import { queryJobsSchema } from '../../src/drivers/qmp/schemas';
import { LiveMergeWorkflow } from '../../src/workflows';
import { HOST_ID, snapshotFiles, startTestStack, type TestStack } from '../harness/in-process-stack';
import { mergeRequest } from '../harness/merge-request';

/** The product end to end: real dev server, real workers, real QEMU VMs with data. */

const MiB = 1024 * 1024;
let stack: TestStack;
let retriedMerges = 0;

beforeAll(async () => {
  stack = await startTestStack({
    // A host agent that dies right after starting the job, once per disk whose vm asks for it:
    // the retry of the merge step must adopt the job instead of starting a second one.
    wrapActivities: (a) => ({
      ...a,
      merge: async (input) => {
        const started = await a.merge(input);
        if (input.vmId.startsWith('retry') && Context.current().info.attempt === 1) {
          retriedMerges++;
          throw new Error('host agent lost after starting the block job');
        }
        return started;
      },
    }),
  });
});
afterAll(async () => stack?.close());
/** The lab VMs a test made, destroyed after it whether it passed or not. */
const made: string[] = [];
afterEach(async () => {
  for (const vmId of made.splice(0)) await destroyLabVm(stack.runDir, vmId);
});

async function labVm(vmId: string, disks: number, volumes: number, layerDataMiB = 1, backingReadOnly = true) {
  made.push(vmId);
  return createVm(vmId, disks, volumes, layerDataMiB, backingReadOnly);
}

async function createVm(vmId: string, disks: number, volumes: number, layerDataMiB = 1, backingReadOnly = true) {
  return createLabVm({
    storageRoot: stack.storageRoot,
    runDir: stack.runDir,
    vmId,
    disks,
    volumes,
    layerDataMiB,
    backingReadOnly,
    sizeMiB: (volumes + 2) * layerDataMiB + 8,
    guest: false, // paused, no guest OS: this test needs no writes
  });
}

function startMerge(request: LiveMergeRequest) {
  return stack.temporal.client.workflow.start(LiveMergeWorkflow, {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId(String(request.snapshotId)),
    args: [request],
  });
}

async function failureOf(promise: Promise<unknown>): Promise<ApplicationFailure> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const cause = (err as WorkflowFailedError).cause;
  expect(cause).toBeInstanceOf(ApplicationFailure);
  return cause as ApplicationFailure;
}

/** Counts the block jobs QEMU creates, from its JOB_STATUS_CHANGE events on the aux monitor. */
async function countJobs(runDir: string, vmId: string) {
  const qmp = await QmpClient.connect(auxQmpSocketPath(runDir, vmId));
  const created = new Set<string>();
  qmp.onEvent((e) => {
    const data = e.data as { id?: string; status?: string } | undefined;
    if (e.event === 'JOB_STATUS_CHANGE' && data?.status === 'created' && data.id) created.add(data.id);
  });
  return { qmp, created };
}

test('intermediate commit: the middle volume is merged into the base and deleted, data reads back', async () => {
  const vm = await labVm('vm-mid', 1, 3);
  const [d] = vm.disks;
  const result = await (
    await startMerge({
      snapshotId: 'snap-mid',
      vmId: vm.vmId,
      hostId: HOST_ID,
      disks: [{ diskId: d.diskId, baseVolumeId: d.volumeIds[0], topVolumeId: d.volumeIds[1] }],
    })
  ).result();
  expect(result.disks[0]).toMatchObject({
    outcome: 'merged',
    commitKind: 'intermediate',
    chainBefore: ['d0v2', 'd0v1', 'd0v0'],
    chainAfter: ['d0v2', 'd0v0'],
    topDeleted: true,
  });
  expect(existsSync(volumePath(stack.storageRoot, d.diskId, 'd0v1'))).toBe(false);
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.disks[0].chain).toEqual(['d0v2', 'd0v0']);
  expect(report.ok).toBe(true);
});

test('intermediate commit into a base opened read-write: the base file itself holds the data before the top is deleted', async () => {
  // QEMU 7.2 keeps such a base's new mappings in its cache after the commit; without the flush
  // before the delete, a QEMU crash right after it would lose the merged data.
  const vm = await labVm('vm-rw', 1, 3, 1, false);
  const [d] = vm.disks;
  const result = await (
    await startMerge({
      snapshotId: 'snap-rw',
      vmId: vm.vmId,
      hostId: HOST_ID,
      disks: [{ diskId: d.diskId, baseVolumeId: d.volumeIds[0], topVolumeId: d.volumeIds[1] }],
    })
  ).result();
  expect(result.disks[0]).toMatchObject({ outcome: 'merged', topDeleted: true });
  const middle = d.regions.find((r) => r.kind === 'layer' && r.layer === 1)!;
  expect(await checkRegion(volumePath(stack.storageRoot, d.diskId, d.volumeIds[0]), middle)).toEqual({ ok: true });
  expect((await verifyLabVm(stack.runDir, vm.vmId)).ok).toBe(true);
});

test('active commit with pivot: the VM writes to the base afterwards, data reads back', async () => {
  const vm = await labVm('vm-act', 1, 3);
  const [d] = vm.disks;
  const result = await (
    await startMerge({
      snapshotId: 'snap-act',
      vmId: vm.vmId,
      hostId: HOST_ID,
      disks: [{ diskId: d.diskId, baseVolumeId: d.volumeIds[1], topVolumeId: d.volumeIds[2] }],
    })
  ).result();
  expect(result.disks[0]).toMatchObject({
    outcome: 'merged',
    commitKind: 'active',
    chainAfter: ['d0v1', 'd0v0'],
    topDeleted: true,
  });
  const chain = await stack.driver.readChain(vm.vmId, d.diskId);
  expect(chain.volumes[0].path).toBe(volumePath(stack.storageRoot, d.diskId, 'd0v1'));
  expect(existsSync(volumePath(stack.storageRoot, d.diskId, 'd0v2'))).toBe(false);
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.disks[0].chain).toEqual(['d0v1', 'd0v0']);
  expect(report.ok).toBe(true);
});

test('two disks in parallel, one intermediate and one active commit; progress shows both', async () => {
  const vm = await labVm('vm-two', 2, 3, 8);
  const handle = await startMerge(
    mergeRequest(vm, 'snap-two', ['intermediate', 'active'], { bandwidthBytesPerSec: 8 * MiB, pollIntervalMs: 100 }),
  );
  const result = await handle.result();
  expect(result.disks.map((x) => [x.diskId, x.outcome, x.commitKind])).toEqual([
    ['disk0', 'merged', 'intermediate'],
    ['disk1', 'merged', 'active'],
  ]);
  const progress = await handle.query<{
    disks: Array<{ diskId: string; phase: string; offset?: number; len?: number }>;
  }>('progress');
  for (const p of progress.disks) {
    expect(p.phase).toBe('merged');
    expect(p.len).toBeGreaterThan(0);
    expect(p.offset).toBe(p.len);
  }
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.disks.map((x) => x.chain)).toEqual([
    ['d0v2', 'd0v0'],
    ['d1v1', 'd1v0'],
  ]);
  expect(report.ok).toBe(true);
});

test('a retried merge step adopts the running job: QEMU runs one job per disk, not two', async () => {
  const vm = await labVm('retry-vm', 2, 3, 8);
  const jobs = await countJobs(stack.runDir, vm.vmId);
  const before = retriedMerges;
  const result = await (
    await startMerge(
      // Slow enough that the job still runs when the retry comes.
      mergeRequest(vm, 'snap-retry', ['intermediate', 'active'], { bandwidthBytesPerSec: 4 * MiB }),
    )
  ).result();
  await jobs.qmp.close();
  expect(retriedMerges - before).toBe(2);
  expect([...jobs.created].sort()).toEqual(['lm.disk0.d0v1', 'lm.disk1.d1v2']);
  expect(result.disks.map((x) => x.outcome)).toEqual(['merged', 'merged']);
  expect((await verifyLabVm(stack.runDir, vm.vmId)).ok).toBe(true);
});

test('a block job cancelled from outside fails the disk with a clear reason and keeps the top volume', async () => {
  const vm = await labVm('vm-cancel', 1, 3, 16);
  const [d] = vm.disks;
  const top = volumePath(stack.storageRoot, d.diskId, d.volumeIds[1]);
  const aux = await QmpClient.connect(auxQmpSocketPath(stack.runDir, vm.vmId));
  const handle = await startMerge({
    snapshotId: 'snap-cancel',
    vmId: vm.vmId,
    hostId: HOST_ID,
    disks: [{ diskId: d.diskId, baseVolumeId: d.volumeIds[0], topVolumeId: d.volumeIds[1] }],
    // 1 MiB/s over 16+ MiB: the job runs for many seconds.
    options: { bandwidthBytesPerSec: MiB, pollIntervalMs: 100 },
  });
  await waitUntil(async () =>
    (await aux.executeParsed('query-jobs', {}, queryJobsSchema)).some((j) => j.status === 'running'),
  );
  await aux.execute('block-job-cancel', { device: 'lm.disk0.d0v1' });
  const failure = await failureOf(handle.result());
  await aux.close();
  expect(failure.type).toBe('DiskMergeFailed');
  expect(failure.message).toMatch(
    /disk0 \(disk disk0: block job lm\.disk0\.d0v1 failed in QEMU: Operation canceled; top volume d0v1 kept\)/,
  );
  expect(existsSync(top)).toBe(true);
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.disks[0].chain).toEqual(['d0v2', 'd0v1', 'd0v0']);
  expect(report.ok).toBe(true);
  // Cleanup dismissed the concluded job: nothing lingers in QEMU.
  expect(await stack.driver.listJobs(vm.vmId)).toEqual([]);
});

describe('invalid inputs are refused with no change to any chain or file', () => {
  let vmId: string;
  beforeAll(async () => {
    vmId = (await createVm('vm-bad', 2, 3)).vmId;
  });
  afterAll(async () => destroyLabVm(stack.runDir, vmId));

  const disk = (diskId: string, baseVolumeId: string, topVolumeId: string) => ({ diskId, baseVolumeId, topVolumeId });
  test.each([
    [
      // Offline, as no VM of that id runs here: the guard finds the running lab VM's QEMU on the disk.
      'an unknown VM',
      { vmId: 'no-such-vm', disks: [disk('disk0', 'd0v0', 'd0v1')] },
      'BaseShared',
      /base volume d0v0 of disk disk0 is used outside its chain: process \d+ \(qemu-system-x86\) has it open/,
    ],
    ['an unknown disk', { disks: [disk('disk9', 'd0v0', 'd0v1')] }, 'DiskNotFound', /has no disk disk9/],
    [
      'a top not in the chain',
      { disks: [disk('disk0', 'd0v0', 'nope')] },
      'VolumeNotInChain',
      /top volume nope is not in the chain of disk disk0/,
    ],
    [
      "a base that is not the top's backing",
      { disks: [disk('disk0', 'd0v0', 'd0v2')] },
      'BaseNotBacking',
      /base volume d0v0 is not the backing of top d0v2/,
    ],
    [
      'a volume of another disk',
      { disks: [disk('disk0', 'd1v0', 'd1v1')] },
      'VolumeNotInChain',
      /top volume d1v1 is not in the chain of disk disk0/,
    ],
    [
      'a path in an id',
      { disks: [disk('disk0', '../d0v0', 'd0v1')] },
      'InvalidMergeInput',
      /disks.0.baseVolumeId: must be letters/,
    ],
  ])('%s', async (_name, overrides, type, message) => {
    const before = snapshotFiles(stack.storageRoot);
    const chainsBefore = (await verifyLabVm(stack.runDir, vmId)).disks.map((d) => d.chain);
    const snapshotId = `bad-${type}-${Math.random().toString(36).slice(2, 8)}`;
    const failure = await failureOf(
      (await startMerge({ snapshotId, vmId, hostId: HOST_ID, ...overrides } as LiveMergeRequest)).result(),
    );
    const causes = [failure.message, String(failure.cause?.message ?? '')].join(' ');
    expect(causes).toMatch(message);
    if (type === 'InvalidMergeInput') expect(failure.type).toBe(type);
    else expect(failure.message).toMatch(new RegExp(`disk \\w+: `));
    expect((await verifyLabVm(stack.runDir, vmId)).disks.map((d) => d.chain)).toEqual(chainsBefore);
    expect(snapshotFiles(stack.storageRoot)).toEqual(before);
  });
});

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}

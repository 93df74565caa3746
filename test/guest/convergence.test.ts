/**
 * DESIGN rule 11 on a real guest: the guest writes 4 KiB records at 800 a second (each dirties a
 * 64 KiB cluster of the top, about 50 MiB/s), the active commit is limited to 2 MiB/s, so it cannot
 * converge. The merge notices it (progress query, the wait's heartbeat, the Web UI's current
 * details) and acts on its policy: `lift` lifts the limit and the merge completes; `fail` cancels the
 * job, never pivots, and fails the disk as NotConverging with the chain as before. In both, the
 * guest's every acknowledged write is on the disk afterwards. One guest at a time (most of a core).
 */
import { existsSync } from 'node:fs';

import { WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure, defaultPayloadConverter, fromPayloadsAtIndex } from '@temporalio/common';

import { checkGuestWrites, countAcks, ensureGuestArtifacts, waitForGuestAcks } from '../../lab/guest';
import { createLabVm, destroyLabVm, type LabVm, runningLabVmPid, stopLabVm } from '../../lab/vm';
import { diskMergeWorkflowId, ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import { checkpointSchema } from '../../src/domain/checkpoint';
import type { LiveMergeRequest } from '../../src/domain/input';
import { volumePath } from '../../src/domain/layout';
import type { DiskProgress, MergeProgress } from '../../src/domain/progress';
import { volumeNames } from '../../src/drivers/driver';
import { LiveMergeWorkflow } from '../../src/workflows';
import { startTestStack, type TestStack } from '../harness/in-process-stack';
import { mergeRequest } from '../harness/merge-request';

jest.setTimeout(240_000);

const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let stack: TestStack;
const vmIds: string[] = [];

beforeAll(async () => {
  await ensureGuestArtifacts();
  stack = await startTestStack();
}, 300_000);
afterEach(async () => {
  for (const vmId of vmIds.splice(0)) await destroyLabVm(stack.runDir, vmId).catch(() => undefined);
});
afterAll(async () => stack?.close());

async function bootGuest(vmId: string): Promise<LabVm> {
  vmIds.push(vmId);
  const vm = await createLabVm({
    storageRoot: stack.storageRoot,
    runDir: stack.runDir,
    vmId,
    disks: 1,
    volumes: 2,
    guest: { rate: 800 },
  });
  if (!vm.guest) throw new Error('no guest');
  await waitForGuestAcks(vm.guest.ackLog, 800);
  return vm;
}

function start(request: LiveMergeRequest) {
  return stack.temporal.client.workflow.start(LiveMergeWorkflow, {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId(String(request.snapshotId)),
    args: [request],
  });
}

const request = (vm: LabVm, snapshotId: string, policy: 'lift' | 'fail') =>
  mergeRequest(vm, snapshotId, ['active'], {
    pollIntervalMs: 250,
    bandwidthBytesPerSec: 2 * MiB,
    // The grace outlasts a wait's heartbeat interval (5 s), so the heartbeat shows the verdict before the policy acts.
    convergence: { windowSeconds: 5, policy, graceSeconds: 8 },
  });

/** Polls the progress query until the disk shows `converging: false` (or the merge ends). */
async function untilNotConverging(handle: WorkflowHandle, done: Promise<unknown>): Promise<DiskProgress> {
  let over = false;
  void done.finally(() => (over = true)).catch(() => undefined);
  const deadline = Date.now() + 60_000;
  while (!over && Date.now() < deadline) {
    const p = await handle.query<MergeProgress>('progress');
    const d = p.disks[0];
    if (d.converging === false) return d;
    await sleep(250);
  }
  throw new Error('the progress query never showed the disk not converging');
}

/** What the Web UI shows: the parent's current details and the wait's heartbeat details. */
async function webUiView(snapshotId: string, diskId: string) {
  const client = stack.temporal.client;
  const metadata = await client.workflow
    .getHandle(liveMergeWorkflowId(snapshotId))
    .query<{ currentDetails?: string }>('__temporal_workflow_metadata');
  const child = await client.workflow.getHandle(diskMergeWorkflowId(snapshotId, diskId)).describe();
  const wait = child.raw.pendingActivities?.find((a) => a.activityType?.name === 'waitForBlockJob');
  const payloads = wait?.heartbeatDetails?.payloads ?? [];
  const heartbeat = payloads.length
    ? checkpointSchema.parse(fromPayloadsAtIndex(defaultPayloadConverter, 0, payloads))
    : undefined;
  return { currentDetails: metadata.currentDetails ?? '', heartbeat };
}

/** The diskProgress signals the parent received, as its history holds them. */
async function progressSignals(handle: WorkflowHandle): Promise<DiskProgress[]> {
  const history = await handle.fetchHistory();
  return (history.events ?? [])
    .map((e) => e.workflowExecutionSignaledEventAttributes)
    .filter((a) => a?.signalName === 'diskProgress' && a.input?.payloads?.length)
    .map((a) => fromPayloadsAtIndex<DiskProgress>(defaultPayloadConverter, 0, a?.input?.payloads ?? []));
}

async function stopAndCheck(vm: LabVm) {
  expect(await stopLabVm(stack.runDir, vm.vmId)).toBe('guest-powered-off');
  const report = await checkGuestWrites(stack.runDir, vm.vmId);
  const d = report.disks[0];
  console.log(
    `${vm.vmId}: ${d.acknowledged} writes acknowledged, ${d.found}/${d.offsetsAcknowledged} acknowledged offsets found, ${d.lost} lost; chain ${d.chain.join(' -> ')}`,
  );
  expect(report.problems).toEqual([]);
  expect(report.ok).toBe(true);
  expect(d.lost).toBe(0);
  expect(d.found).toBe(d.offsetsAcknowledged);
  return report;
}

test('policy lift: the disk shows not converging, the limit is lifted, the merge completes, no write lost', async () => {
  const vm = await bootGuest('conv-lift');
  const disk = vm.disks[0];
  const handle = await start(request(vm, 'conv-lift', 'lift'));
  const result = handle.result();

  const seen = await untilNotConverging(handle, result);
  console.log(`lift: progress query ${JSON.stringify(seen)}`);
  expect(seen).toMatchObject({ phase: 'waiting', commitKind: 'active', converging: false });
  expect(seen.remainingBytes).toBeGreaterThan(0);
  expect(Date.parse(seen.notConvergingSince ?? '')).toBeLessThan(Date.now() - 5000);
  // The current details change with the signal the query showed; read them before the lift.
  const atDetection = await webUiView('conv-lift', disk.diskId);
  console.log(`lift: current details "${atDetection.currentDetails}"`);
  expect(atDetection.currentDetails).toContain(`${disk.diskId}: not converging`);
  // A wait heartbeats every 5 s (throttled): its details may lag the signal by that much, within
  // the grace.
  let ui = atDetection;
  const seenInHeartbeat = () => ui.heartbeat?.convergence?.converging === false;
  for (let i = 0; i < 60 && !seenInHeartbeat(); i++) {
    await sleep(250);
    ui = await webUiView('conv-lift', disk.diskId);
  }
  console.log(`lift: heartbeat ${JSON.stringify(ui.heartbeat)}`);
  expect(seenInHeartbeat()).toBe(true);

  const merged = await result;
  expect(merged.disks[0]).toMatchObject({ outcome: 'merged', commitKind: 'active', topDeleted: true });
  expect(merged.disks[0].chainAfter).toEqual([disk.volumeIds[0]]);
  const signals = await progressSignals(handle);
  expect(signals.some((s) => s.converging === false)).toBe(true);
  expect(signals.some((s) => s.speedLiftedAt !== undefined)).toBe(true);

  const report = await stopAndCheck(vm);
  expect(report.disks[0].chain).toEqual([disk.volumeIds[0]]);
});

test('policy fail: NotConverging, no pivot, chain as before, top kept, the VM runs on, no write lost', async () => {
  const vm = await bootGuest('conv-fail');
  const disk = vm.disks[0];
  const chainBefore = volumeNames(await stack.driver.readChain(vm.vmId, disk.diskId));
  expect(chainBefore).toEqual([disk.volumeIds[1], disk.volumeIds[0]]);
  const handle = await start(request(vm, 'conv-fail', 'fail'));
  const result = handle.result();

  const seen = await untilNotConverging(handle, result);
  console.log(`fail: progress query ${JSON.stringify(seen)}`);
  expect(seen).toMatchObject({ phase: 'waiting', converging: false });

  const err = await result.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  expect((err as WorkflowFailedError).cause).toMatchObject({ type: 'DiskMergeFailed' });
  const childErr = await stack.temporal.client.workflow
    .getHandle(diskMergeWorkflowId('conv-fail', disk.diskId))
    .result()
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  const cause = (childErr as WorkflowFailedError).cause;
  expect(cause).toBeInstanceOf(ApplicationFailure);
  expect(cause).toMatchObject({ type: 'NotConverging', nonRetryable: true });
  console.log(`fail: ${cause?.message}`);
  expect(cause?.message).toMatch(/did not converge.*chain unchanged.*top volume .* kept/);
  const final = (await handle.query<MergeProgress>('progress')).disks[0];
  expect(final).toMatchObject({ phase: 'failed', converging: false });

  // Chain as before, the top kept (on disk and active), no job left, and the guest still writes.
  expect(volumeNames(await stack.driver.readChain(vm.vmId, disk.diskId))).toEqual(chainBefore);
  expect(existsSync(volumePath(stack.storageRoot, disk.diskId, disk.volumeIds[1]))).toBe(true);
  expect(await stack.driver.listJobs(vm.vmId)).toEqual([]);
  expect(await runningLabVmPid(stack.runDir, vm.vmId)).toBeDefined();
  const acks = await countAcks(vm.guest?.ackLog ?? '');
  await sleep(1000);
  expect(await countAcks(vm.guest?.ackLog ?? '')).toBeGreaterThan(acks + 100);

  const report = await stopAndCheck(vm);
  expect(report.disks[0].chain).toEqual(chainBefore);
});

import { existsSync } from 'node:fs';

import { WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { CancelledFailure } from '@temporalio/common';

import { auxQmpCommand, createLabVm, destroyLabVm, verifyLabVm } from '../../lab/vm';
import { InvalidMergeRequestError, LiveMergeClient, type LiveMergeRequest } from '../../src/client';
import { liveMergeWorkflowId } from '../../src/config/names';
import { volumePath } from '../../src/domain/layout';
import { HOST_ID, snapshotFiles, startTestStack, type TestStack } from '../harness/in-process-stack';
import { until } from '../harness/until';

/** The engine client against the real product: dev server, engine and host workers, QEMU lab VMs. */

const MiB = 1024 * 1024;
let stack: TestStack;
let merges: LiveMergeClient;

beforeAll(async () => {
  stack = await startTestStack();
  // Connects the way engine code does: from the Temporal environment configuration.
  merges = await LiveMergeClient.connect({
    env: { TEMPORAL_ADDRESS: stack.temporal.server.address, TEMPORAL_NAMESPACE: stack.temporal.server.namespace },
  });
});
afterAll(async () => {
  await merges?.close();
  await stack?.close();
});

/** The lab VMs a test made, destroyed after it whether it passed or not. */
const made: string[] = [];
afterEach(async () => {
  for (const vmId of made.splice(0)) await destroyLabVm(stack.runDir, vmId);
});

async function labVm(vmId: string, layerDataMiB: number) {
  made.push(vmId);
  return createLabVm({
    storageRoot: stack.storageRoot,
    runDir: stack.runDir,
    vmId,
    disks: 1,
    volumes: 3,
    layerDataMiB,
    sizeMiB: 5 * layerDataMiB + 8,
    guest: false, // paused, no guest OS: this test needs no writes
  });
}

/** The speed QEMU applies to each block job of the VM, from `query-block-jobs` on its aux monitor. */
async function jobSpeeds(vmId: string): Promise<Record<string, number>> {
  const jobs = (await auxQmpCommand(stack.runDir, vmId, 'query-block-jobs')) as Array<{
    device: string;
    speed: number;
  }>;
  return Object.fromEntries(jobs.map((j) => [j.device, j.speed]));
}

async function historyEventTypes(snapshotId: string): Promise<string[]> {
  const history = await stack.temporal.client.workflow.getHandle(liveMergeWorkflowId(snapshotId)).fetchHistory();
  return (history.events ?? []).map((e) => Object.keys(e).find((k) => k.endsWith('EventAttributes')) ?? '');
}

test('an invalid request is refused before anything is sent, naming the field: no workflow appears on the server', async () => {
  const bad = {
    snapshotId: 'snap-bad',
    vmId: 'vm-x',
    hostId: HOST_ID,
    disks: [{ diskId: 'disk0', baseVolumeId: '../d0v0', topVolumeId: 'd0v1' }],
    options: { bandwidthBytesPerSec: -1 },
  };
  const err = await merges.startMerge(bad).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(InvalidMergeRequestError);
  expect((err as InvalidMergeRequestError).fields).toEqual(['disks.0.baseVolumeId', 'options.bandwidthBytesPerSec']);
  expect((err as InvalidMergeRequestError).message).toMatch(
    /^invalid merge request: disks\.0\.baseVolumeId: must be letters/,
  );
  await expect(
    stack.temporal.client.workflow.getHandle(liveMergeWorkflowId('snap-bad')).describe(),
  ).rejects.toBeInstanceOf(WorkflowNotFoundError);

  const missing = await merges
    .startMerge({ snapshotId: 'snap-bad', vmId: 'vm-x', hostId: HOST_ID } as unknown as LiveMergeRequest)
    .catch((e: unknown) => e);
  expect((missing as InvalidMergeRequestError).fields).toEqual(['disks']);
  await expect(merges.getProgress('../x')).rejects.toThrow(/invalid snapshot id: snapshotId: must be letters/);
  await expect(
    stack.temporal.client.workflow.getHandle(liveMergeWorkflowId('snap-bad')).describe(),
  ).rejects.toBeInstanceOf(WorkflowNotFoundError);
});

test('start is idempotent on the snapshot; progress; setBandwidth changes the running job in QEMU; result', async () => {
  const vm = await labVm('vm-client', 4);
  const [d] = vm.disks;
  const snapshotId = 'snap-client';
  const request: LiveMergeRequest = {
    snapshotId,
    vmId: vm.vmId,
    hostId: HOST_ID,
    disks: [{ diskId: d.diskId, baseVolumeId: d.volumeIds[0], topVolumeId: d.volumeIds[1] }],
    // 8 MiB to copy at 512 KiB/s: the job runs for many seconds unless the limit is raised.
    options: { bandwidthBytesPerSec: MiB / 2, pollIntervalMs: 100 },
  };
  const first = await merges.startMerge(request);
  expect(first).toMatchObject({ workflowId: 'live-merge-snap-client', started: true });
  const again = await merges.startMerge(request);
  expect(again).toMatchObject({ workflowId: 'live-merge-snap-client', runId: first.runId, started: false });

  await until(async () => (await merges.getProgress(snapshotId)).disks[0].jobStatus === 'running');
  const progress = await merges.getProgress(snapshotId);
  expect(progress).toMatchObject({ snapshotId, vmId: vm.vmId, hostId: HOST_ID, bandwidthBytesPerSec: MiB / 2 });
  expect(progress.disks[0]).toMatchObject({ diskId: 'disk0', phase: 'waiting', commitKind: 'intermediate' });
  expect(progress.disks[0].len).toBeGreaterThan(0);
  expect(await jobSpeeds(vm.vmId)).toEqual({ 'lm.disk0.d0v1': MiB / 2 });

  const invalid = await merges.setBandwidth(snapshotId, -5).catch((e: unknown) => e);
  expect(invalid).toBeInstanceOf(InvalidMergeRequestError);
  expect((invalid as InvalidMergeRequestError).fields).toEqual(['bytesPerSec']);

  expect(await merges.setBandwidth(snapshotId, 3 * MiB)).toEqual({
    bytesPerSec: 3 * MiB,
    disks: [{ diskId: 'disk0', applied: 'set', jobStatus: 'running' }],
  });
  expect(await jobSpeeds(vm.vmId)).toEqual({ 'lm.disk0.d0v1': 3 * MiB });
  expect((await merges.getProgress(snapshotId)).bandwidthBytesPerSec).toBe(3 * MiB);
  expect((await merges.setBandwidth(snapshotId, 0)).disks[0].applied).toMatch(/^(set|notRunning)$/);

  const result = await merges.result(snapshotId);
  expect(result.disks).toEqual([
    {
      diskId: 'disk0',
      outcome: 'merged',
      commitKind: 'intermediate',
      chainBefore: ['d0v2', 'd0v1', 'd0v0'],
      chainAfter: ['d0v2', 'd0v0'],
      topDeleted: true,
      mode: 'live',
      activeVolumeId: 'd0v2',
    },
  ]);
  expect(existsSync(volumePath(stack.storageRoot, d.diskId, 'd0v1'))).toBe(false);
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.disks[0].chain).toEqual(['d0v2', 'd0v0']);
  expect(report.ok).toBe(true);
  expect((await merges.getProgress(snapshotId)).disks[0].phase).toBe('merged');

  // The update and its answers are in the history; the rejected one never entered it.
  const events = await historyEventTypes(snapshotId);
  expect(events.filter((e) => e === 'workflowExecutionUpdateAcceptedEventAttributes')).toHaveLength(2);
  expect(events.filter((e) => e === 'workflowExecutionUpdateCompletedEventAttributes')).toHaveLength(2);

  // Starting a completed merge again returns it: nothing new runs.
  const after = await merges.startMerge(request);
  expect(after).toMatchObject({ runId: first.runId, started: false });
  expect((await after.handle.describe()).status.name).toBe('COMPLETED');
});

test('cancel: the block job is cancelled, the workflow ends CANCELLED, chain unchanged, top kept', async () => {
  const vm = await labVm('vm-client-cancel', 4);
  const [d] = vm.disks;
  const snapshotId = 'snap-client-cancel';
  const before = snapshotFiles(stack.storageRoot);
  // Through an existing Client too.
  const viaClient = await LiveMergeClient.connect({ client: stack.temporal.client });
  await viaClient.startMerge({
    snapshotId,
    vmId: vm.vmId,
    hostId: HOST_ID,
    disks: [{ diskId: d.diskId, baseVolumeId: d.volumeIds[1], topVolumeId: d.volumeIds[2] }],
    options: { bandwidthBytesPerSec: MiB / 4, pollIntervalMs: 100 },
  });
  await until(async () => (await viaClient.getProgress(snapshotId)).disks[0].jobStatus === 'running');
  await viaClient.cancel(snapshotId);
  const err = await viaClient.result(snapshotId).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(WorkflowFailedError);
  expect((err as WorkflowFailedError).cause).toBeInstanceOf(CancelledFailure);
  expect((await viaClient.handle(snapshotId).describe()).status.name).toBe('CANCELLED');
  expect((await viaClient.getProgress(snapshotId)).disks[0].phase).toBe('cancelled');

  expect(existsSync(volumePath(stack.storageRoot, d.diskId, 'd0v2'))).toBe(true);
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.disks[0].chain).toEqual(['d0v2', 'd0v1', 'd0v0']);
  expect(report.ok).toBe(true);
  expect(await stack.driver.listJobs(vm.vmId)).toEqual([]);
  // Nothing was deleted.
  const now = snapshotFiles(stack.storageRoot);
  for (const f of Object.keys(before)) expect(now).toHaveProperty([f]);
});

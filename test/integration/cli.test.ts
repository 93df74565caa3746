import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { auxQmpCommand, createLabVm, destroyLabVm, verifyLabVm } from '../../lab/vm';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import type { BandwidthSet } from '../../src/domain/bandwidth';
import type { LiveMergeRequest } from '../../src/domain/input';
import { volumePath } from '../../src/domain/layout';
import type { LiveMergeResult } from '../../src/domain/outcome';
import type { MergeProgress } from '../../src/domain/progress';
import { HOST_ID, startTestStack, type TestStack } from '../harness/in-process-stack';
import { mergeRequest } from '../harness/merge-request';
import { type CliRun, temporalCli } from '../harness/temporal-cli';
import { until } from '../harness/until';

/**
 * Operators' surface: the real Temporal CLI (the pinned v1.5.1) against the product on a dev
 * server with real workers and QEMU lab VMs. These are the commands the README shows.
 */

const MiB = 1024 * 1024;
let stack: TestStack;
let dir: string;

beforeAll(async () => {
  stack = await startTestStack();
  dir = mkdtempSync(path.join(os.tmpdir(), 'lm-cli-'));
});
afterAll(async () => {
  await stack?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function temporal(...args: string[]): Promise<CliRun> {
  return temporalCli(stack.temporal.server, dir)(...args);
}

async function ok(...args: string[]): Promise<string> {
  const run = await temporal(...args);
  if (run.code !== 0) throw new Error(`temporal ${args.join(' ')} exited ${run.code}: ${run.stderr}${run.stdout}`);
  return run.stdout;
}

async function json<T>(...args: string[]): Promise<T> {
  return JSON.parse(await ok(...args, '--output', 'json')) as T;
}

/** The lab VMs a test made, destroyed after it whether it passed or not. */
const made: string[] = [];
afterEach(async () => {
  for (const vmId of made.splice(0)) await destroyLabVm(stack.runDir, vmId);
});

async function labVm(vmId: string, disks: number) {
  made.push(vmId);
  return createLabVm({
    storageRoot: stack.storageRoot,
    runDir: stack.runDir,
    vmId,
    disks,
    volumes: 3,
    layerDataMiB: 4,
    sizeMiB: 28,
    guest: false, // paused, no guest OS: this test needs no writes
  });
}

async function jobSpeeds(vmId: string): Promise<Record<string, number>> {
  const jobs = (await auxQmpCommand(stack.runDir, vmId, 'query-block-jobs')) as Array<{
    device: string;
    speed: number;
  }>;
  return Object.fromEntries(jobs.map((j) => [j.device, j.speed]));
}

/** `temporal workflow query --type progress` prints the query's answer as `queryResult`, an array of its values. */
async function queryProgress(workflowId: string): Promise<MergeProgress> {
  const out = await json<{ queryResult: MergeProgress[] }>(
    'workflow',
    'query',
    '--workflow-id',
    workflowId,
    '--type',
    'progress',
  );
  return out.queryResult[0];
}

test('start from an input file, query progress, change the bandwidth with an update, describe, show, result', async () => {
  const vm = await labVm('vm-cli', 2);
  const workflowId = liveMergeWorkflowId('snap-cli');
  // 8 MiB per disk at 512 KiB/s: many seconds, unless the bandwidth is raised.
  const input: LiveMergeRequest = mergeRequest(vm, 'snap-cli', ['intermediate', 'active'], {
    pollIntervalMs: 200,
    bandwidthBytesPerSec: MiB / 2,
  });
  const file = path.join(dir, 'merge.json');
  writeFileSync(file, JSON.stringify(input, null, 2));

  const started = await ok(
    'workflow',
    'start',
    '--task-queue',
    ENGINE_TASK_QUEUE,
    '--type',
    'LiveMergeWorkflow',
    '--workflow-id',
    workflowId,
    '--input-file',
    file,
  );
  expect(started).toMatch(/Running execution:/);
  expect(started).toContain(workflowId);

  await until(async () => (await queryProgress(workflowId)).disks.every((d) => d.jobStatus === 'running'));
  const progress = await queryProgress(workflowId);
  expect(progress).toMatchObject({
    snapshotId: 'snap-cli',
    vmId: 'vm-cli',
    hostId: HOST_ID,
    bandwidthBytesPerSec: MiB / 2,
  });
  expect(progress.disks.map((d) => [d.diskId, d.phase, d.commitKind])).toEqual([
    ['disk0', 'waiting', 'intermediate'],
    ['disk1', 'waiting', 'active'],
  ]);
  expect(await jobSpeeds(vm.vmId)).toEqual({ 'lm.disk0.d0v1': MiB / 2, 'lm.disk1.d1v2': MiB / 2 });

  // A bad value is rejected by the update's validator, naming the field; the jobs keep their speed.
  const rejected = await temporal(
    'workflow',
    'update',
    'execute',
    '--workflow-id',
    workflowId,
    '--name',
    'setBandwidth',
    '--input',
    '{"bytesPerSec": -1}',
  );
  expect(rejected.code).not.toBe(0);
  expect(rejected.stderr + rejected.stdout).toMatch(/bytesPerSec: must not be negative/);
  expect(await jobSpeeds(vm.vmId)).toEqual({ 'lm.disk0.d0v1': MiB / 2, 'lm.disk1.d1v2': MiB / 2 });

  const set = await json<{ result: BandwidthSet }>(
    'workflow',
    'update',
    'execute',
    '--workflow-id',
    workflowId,
    '--name',
    'setBandwidth',
    '--input',
    '{"bytesPerSec": 2097152}',
  );
  expect(set.result).toEqual({
    bytesPerSec: 2 * MiB,
    disks: [
      { diskId: 'disk0', applied: 'set', jobStatus: 'running' },
      { diskId: 'disk1', applied: 'set', jobStatus: 'running' },
    ],
  });
  expect(await jobSpeeds(vm.vmId)).toEqual({ 'lm.disk0.d0v1': 2 * MiB, 'lm.disk1.d1v2': 2 * MiB });
  expect((await queryProgress(workflowId)).bandwidthBytesPerSec).toBe(2 * MiB);
  // Unlimited: the merge finishes at once.
  await ok(
    'workflow',
    'update',
    'execute',
    '--workflow-id',
    workflowId,
    '--name',
    'setBandwidth',
    '--input',
    '{"bytesPerSec": 0}',
  );

  const result = await json<{ status: string; result: LiveMergeResult }>(
    'workflow',
    'result',
    '--workflow-id',
    workflowId,
  );
  expect(result.status).toBe('COMPLETED');
  expect(result.result.disks.map((d) => [d.diskId, d.outcome, d.commitKind, d.chainAfter, d.topDeleted])).toEqual([
    ['disk0', 'merged', 'intermediate', ['d0v2', 'd0v0'], true],
    ['disk1', 'merged', 'active', ['d1v1', 'd1v0'], true],
  ]);
  const text = await ok('workflow', 'result', '--workflow-id', workflowId);
  expect(text).toMatch(/Status\s+COMPLETED/);

  const described = await json<{
    workflowExecutionInfo: { status: string; type: { name: string } };
    pendingChildren?: unknown[];
  }>('workflow', 'describe', '--workflow-id', workflowId);
  expect(described.workflowExecutionInfo.status).toBe('WORKFLOW_EXECUTION_STATUS_COMPLETED');
  expect(described.workflowExecutionInfo.type.name).toBe('LiveMergeWorkflow');
  expect(described.pendingChildren ?? []).toEqual([]);

  const shown = await json<{ events: Array<Record<string, unknown>> }>('workflow', 'show', '--workflow-id', workflowId);
  const kinds = shown.events.map((e) => String(e.eventType));
  expect(kinds.filter((k) => k === 'EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED')).toHaveLength(2);
  expect(kinds.filter((k) => k === 'EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED')).toHaveLength(2);
  expect(kinds.filter((k) => k === 'EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED')).toHaveLength(2);
  expect(kinds.at(-1)).toBe('EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED');

  expect(existsSync(volumePath(stack.storageRoot, 'disk0', 'd0v1'))).toBe(false);
  expect(existsSync(volumePath(stack.storageRoot, 'disk1', 'd1v2'))).toBe(false);
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.disks.map((d) => d.chain)).toEqual([
    ['d0v2', 'd0v0'],
    ['d1v1', 'd1v0'],
  ]);
  expect(report.ok).toBe(true);
});

test('a merge cancelled with temporal workflow cancel ends CANCELLED, chain unchanged, top kept', async () => {
  const vm = await labVm('vm-cli-cancel', 1);
  const [d] = vm.disks;
  const workflowId = liveMergeWorkflowId('snap-cli-cancel');
  const input: LiveMergeRequest = {
    snapshotId: 'snap-cli-cancel',
    vmId: vm.vmId,
    hostId: HOST_ID,
    disks: [{ diskId: d.diskId, baseVolumeId: d.volumeIds[0], topVolumeId: d.volumeIds[1] }],
    options: { pollIntervalMs: 200, bandwidthBytesPerSec: MiB / 4 },
  };
  const file = path.join(dir, 'cancel.json');
  writeFileSync(file, JSON.stringify(input));
  await ok(
    'workflow',
    'start',
    '--task-queue',
    ENGINE_TASK_QUEUE,
    '--type',
    'LiveMergeWorkflow',
    '--workflow-id',
    workflowId,
    '--input-file',
    file,
  );
  await until(async () => (await queryProgress(workflowId)).disks[0].jobStatus === 'running');

  expect(await ok('workflow', 'cancel', '--workflow-id', workflowId)).toMatch(/Canceled workflow/i);
  const result = await temporal('workflow', 'result', '--workflow-id', workflowId);
  expect(result.stdout + result.stderr).toMatch(/CANCELED/);
  const described = await json<{ workflowExecutionInfo: { status: string } }>(
    'workflow',
    'describe',
    '--workflow-id',
    workflowId,
  );
  expect(described.workflowExecutionInfo.status).toBe('WORKFLOW_EXECUTION_STATUS_CANCELED');
  expect((await queryProgress(workflowId)).disks[0].phase).toBe('cancelled');

  expect(existsSync(volumePath(stack.storageRoot, d.diskId, 'd0v1'))).toBe(true);
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.disks[0].chain).toEqual(['d0v2', 'd0v1', 'd0v0']);
  expect(report.ok).toBe(true);
  expect(await stack.driver.listJobs(vm.vmId)).toEqual([]);
});

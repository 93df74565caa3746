import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { freePort } from '../../lab/devserver/free-port';
import { startWorkerProcess, waitForPoller, type WorkerProcess } from '../../lab/devserver/worker-process';
import { createLabVm, destroyLabVm } from '../../lab/vm';
import { MERGE_METRICS } from '../../src/config/metrics';
import { ENGINE_TASK_QUEUE, hostJobTaskQueue, hostTaskQueue, liveMergeWorkflowId } from '../../src/config/names';
import type { LiveMergeRequest } from '../../src/domain/input';
import { readMergeProgress } from '../../src/progress/read-progress';
import { LiveMergeWorkflow } from '../../src/workflows';
import { startTestTemporal, type TestTemporal } from '../harness/temporal';

/**
 * The worker entry point with `--metrics-address`: its Prometheus endpoint serves the SDK's
 * metrics and the merge's own, during a real (bandwidth-limited) merge of a lab VM and after it;
 * its log lines are JSON with the workflow, disk and host ids. `npm run watch` follows the merge.
 */

const MiB = 1024 * 1024;
const HOST_ID = 'host1';
let temporal: TestTemporal;
let worker: WorkerProcess;
let dir: string;
let storageRoot: string;
let runDir: string;
let metricsUrl: string;
/** The lab VM the test created, destroyed in afterAll whether the test passed or not. */
let vmId: string | undefined;

beforeAll(async () => {
  temporal = await startTestTemporal();
  dir = mkdtempSync(path.join(os.tmpdir(), 'lm-metrics-'));
  storageRoot = path.join(dir, 'storage');
  runDir = path.join(dir, 'run');
  const metricsAddress = `127.0.0.1:${await freePort()}`;
  metricsUrl = `http://${metricsAddress}/metrics`;
  worker = await startWorkerProcess({
    args: [
      '--role',
      'engine,host',
      '--host-id',
      HOST_ID,
      '--storage-root',
      storageRoot,
      '--run-dir',
      runDir,
      '--metrics-address',
      metricsAddress,
    ],
    address: temporal.server.address,
    namespace: temporal.server.namespace,
    taskQueue: hostTaskQueue(HOST_ID),
    client: temporal.client,
    logFile: path.join(dir, 'worker.log'),
  });
  await waitForPoller(temporal.client, temporal.server.namespace, ENGINE_TASK_QUEUE, 60_000);
}, 180_000);

afterAll(async () => {
  if (vmId) await destroyLabVm(runDir, vmId);
  await worker?.stop();
  await temporal?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The Prometheus text format, samples only. */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || line.startsWith('#')) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

async function scrape(): Promise<Sample[]> {
  const res = await fetch(metricsUrl);
  expect(res.status).toBe(200);
  return parseMetrics(await res.text());
}

function find(samples: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

function total(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return find(samples, name, labels).reduce((sum, s) => sum + s.value, 0);
}

async function waitUntil(fn: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** `src/watch.ts` as `npm run watch` runs it, its output piped (so: plain lines). */
function watchMerge(snapshotId: string): Promise<{ code: number | null; output: string }> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      path.resolve(__dirname, '../../src/watch.ts'),
      '--snapshot-id',
      snapshotId,
      '--interval-ms',
      '200',
    ],
    {
      cwd: path.resolve(__dirname, '../..'),
      env: { ...process.env, TEMPORAL_ADDRESS: temporal.server.address, TEMPORAL_NAMESPACE: temporal.server.namespace },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  child.stdout.on('data', (b: Buffer) => (output += b.toString()));
  child.stderr.on('data', (b: Buffer) => (output += b.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, output })));
}

function logLines(): Array<Record<string, unknown>> {
  return readFileSync(worker.logFile, 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/**
 * The merged disk's "disk merge ended" line, waited for: it was once missing from a CI run's read
 * of the log although the same workflow task's metrics were served; a line that never comes still
 * fails, with the log's merge-end and non-JSON lines in the message.
 */
async function endOfMergedDisk(): Promise<Record<string, unknown> | undefined> {
  let ended: Record<string, unknown> | undefined;
  try {
    await waitUntil(async () => {
      ended = logLines().find((l) => l.message === 'disk merge ended' && l.outcome === 'merged');
      return ended !== undefined;
    }, 15_000);
  } catch (err) {
    const seen = readFileSync(worker.logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('disk merge') || (l !== '' && !l.startsWith('{')));
    throw new Error(`no merged "disk merge ended" line in ${worker.logFile}; seen:\n${seen.join('\n')}`, {
      cause: err,
    });
  }
  return ended;
}

test('the worker exports SDK and merge metrics during and after a real merge, and logs JSON lines with workflow, disk and host ids', async () => {
  const vm = await createLabVm({
    storageRoot,
    runDir,
    vmId: 'vm-metrics',
    disks: 1,
    volumes: 3,
    layerDataMiB: 8,
    sizeMiB: 48,
    guest: false, // paused, no guest OS: this test needs no writes
  });
  vmId = vm.vmId;
  const [d] = vm.disks;
  const request: LiveMergeRequest = {
    snapshotId: 'snap-metrics',
    vmId: vm.vmId,
    hostId: HOST_ID,
    disks: [{ diskId: d.diskId, baseVolumeId: d.volumeIds[0], topVolumeId: d.volumeIds[1] }],
    // 8 MiB of data at 1 MiB/s: the job runs about 8 s, time for the watch command to start up
    // and see it running even on a busy machine.
    options: { bandwidthBytesPerSec: MiB, pollIntervalMs: 100 },
  };
  const started = Date.now();
  const handle = await temporal.client.workflow.start(LiveMergeWorkflow, {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId(request.snapshotId),
    args: [request],
  });
  const watched = watchMerge(request.snapshotId);

  // During the merge: the block job runs, the SDK's metrics are served, no merge has ended yet.
  await waitUntil(async () => {
    const p = (await readMergeProgress(temporal.client, request.snapshotId)).disks[0];
    return p.phase === 'waiting' && (p.offset ?? 0) > 0 && (p.offset ?? 0) < (p.len ?? 0);
  });
  const during = await scrape();
  const runningFor = (Date.now() - started) / 1000;
  expect(total(during, 'temporal_worker_start')).toBeGreaterThanOrEqual(2);
  expect(find(during, 'temporal_num_pollers', { task_queue: hostTaskQueue(HOST_ID) }).length).toBeGreaterThan(0);
  // The merge step runs as a local activity of the disk's workflow, in the host agent.
  expect(total(during, 'temporal_local_activity_execution_latency_count', { activity_type: 'merge' })).toBe(1);
  expect(total(during, MERGE_METRICS.outcomes)).toBe(0);
  expect(total(during, `${MERGE_METRICS.duration}_count`)).toBe(0);

  const result = await handle.result();
  const elapsed = (Date.now() - started) / 1000;
  expect(result.disks[0]).toMatchObject({ outcome: 'merged', topDeleted: true });
  const progress = await handle.query<{ disks: Array<{ len?: number }> }>('progress');
  const len = progress.disks[0].len ?? 0;
  expect(len).toBeGreaterThan(0);

  // The watch command followed it to the end in plain lines (its stdout is a pipe).
  const watch = await watched;
  expect(watch.code).toBe(0);
  const lines = watch.output.split('\n');
  expect(lines).toContain(
    `${d.diskId}: merged intermediate commit 100% ${(len / MiB).toFixed(1)}/${(len / MiB).toFixed(1)} MiB`,
  );
  expect(lines.some((l) => /^disk0: waiting intermediate commit [1-9]\d?% /.test(l))).toBe(true);
  expect(lines).toContain('merge completed');
  // eslint-disable-next-line no-control-regex -- terminal escapes are what this checks
  expect(watch.output).not.toMatch(/\x1b\[/);

  // A second snapshot whose top is not in the chain: that disk fails on the same host.
  const bad = await temporal.client.workflow.start(LiveMergeWorkflow, {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId('snap-metrics-bad'),
    args: [
      {
        ...request,
        snapshotId: 'snap-metrics-bad',
        disks: [{ diskId: d.diskId, baseVolumeId: d.volumeIds[0], topVolumeId: 'd0v9' }],
      },
    ],
  });
  await expect(bad.result()).rejects.toThrow();

  // After: the SDK meter exports on its own schedule; wait for both outcomes to show.
  let after: Sample[] = [];
  await waitUntil(async () => {
    after = await scrape();
    return total(after, MERGE_METRICS.outcomes) === 2;
  }, 15_000);
  const host = { host_id: HOST_ID };
  expect(total(after, MERGE_METRICS.outcomes, { ...host, outcome: 'merged' })).toBe(1);
  expect(total(after, MERGE_METRICS.outcomes, { ...host, outcome: 'failed' })).toBe(1);
  expect(total(after, MERGE_METRICS.bytesCommitted, host)).toBe(len);
  expect(total(after, `${MERGE_METRICS.duration}_count`, { ...host, outcome: 'merged' })).toBe(1);
  const seconds = total(after, `${MERGE_METRICS.duration}_sum`, { ...host, outcome: 'merged' });
  expect(seconds).toBeGreaterThan(runningFor - 1);
  expect(seconds).toBeLessThan(elapsed + 1);
  // The +Inf bucket holds the merge; the 1 s bucket does not (it ran for seconds).
  expect(total(after, `${MERGE_METRICS.duration}_bucket`, { ...host, outcome: 'merged', le: '+Inf' })).toBe(1);
  expect(total(after, `${MERGE_METRICS.duration}_bucket`, { ...host, outcome: 'merged', le: '1' })).toBe(0);
  // The SDK's own: the disk's workflow completed and its delete ran, both in the host agent.
  expect(total(after, 'temporal_workflow_completed', { workflow_type: 'DiskMergeWorkflow' })).toBe(1);
  expect(
    total(after, 'temporal_local_activity_execution_latency_count', {
      activity_type: 'deleteVolume',
      task_queue: hostJobTaskQueue(HOST_ID),
    }),
  ).toBe(1);

  // Logs: JSON lines; the host steps carry workflowId, diskId and hostId, the disk's end too.
  const logs = logLines();
  const diskWorkflowId = `${liveMergeWorkflowId(request.snapshotId)}-disk-${d.diskId}`;
  const started_ = logs.find((l) => l.message === 'block commit started');
  expect(started_).toMatchObject({
    level: 'INFO',
    workflowId: diskWorkflowId,
    diskId: d.diskId,
    hostId: HOST_ID,
    vmId: vm.vmId,
    activityType: 'merge',
  });
  expect(await endOfMergedDisk()).toMatchObject({
    workflowId: diskWorkflowId,
    workflowType: 'DiskMergeWorkflow',
    diskId: d.diskId,
    hostId: HOST_ID,
    bytesCommitted: len,
  });
  for (const l of logs) expect(typeof l.time).toBe('string');
  expect(logs.some((l) => 'taskToken' in l)).toBe(false);
});

/**
 * QmpClient against a real QEMU 7.2 (paused CPU, no guest OS): a two-image qcow2 chain on a
 * virtio-blk device, queried and then actively committed (top → base) with a manual pivot.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { JobStatus } from '../../src/drivers/driver';
import { QmpClient, type QmpEvent } from '../../src/drivers/qmp/client';
import { QmpCommandError, QmpConnectError } from '../../src/drivers/qmp/errors';
import {
  type BlockInfo,
  flattenImageChain,
  jobStatusChangeDataSchema,
  qemuVersionSchema,
  queryBlockJobsSchema,
  queryBlockSchema,
  queryJobsSchema,
  queryNamedBlockNodesSchema,
} from '../../src/drivers/qmp/schemas';

jest.setTimeout(20_000);

const execFileAsync = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

let dir: string;
let base: string;
let top: string;
let qemu: ChildProcess | undefined;
let qemuStderr = '';
let client: QmpClient;

async function connectWithRetry(socketPath: string, deadlineMs: number): Promise<QmpClient> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    try {
      return await QmpClient.connect(socketPath, { timeoutMs: 5_000 });
    } catch (err) {
      const retryable = err instanceof QmpConnectError && (err.code === 'ENOENT' || err.code === 'ECONNREFUSED');
      if (!retryable || Date.now() > deadline || qemu?.exitCode != null) {
        throw new Error(`QMP connect failed (qemu stderr: ${qemuStderr.trim()})`, { cause: err });
      }
      await sleep(50);
    }
  }
}

function disk0(blocks: BlockInfo[]): BlockInfo {
  const found = blocks.find((b) => b.qdev?.includes('disk0'));
  if (found === undefined) throw new Error(`no block device with qdev containing disk0: ${JSON.stringify(blocks)}`);
  return found;
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-qemu-'));
  base = path.join(dir, 'base.qcow2');
  top = path.join(dir, 'top.qcow2');
  await execFileAsync('qemu-img', ['create', '-f', 'qcow2', base, '16M']);
  // Relative backing path, as the brief's chain-building command: QEMU then reports the top image
  // under a json:{...} pseudo-filename, which flattenImageChain must decode.
  await execFileAsync('qemu-img', ['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top], { cwd: dir });
  // Some data in the top so the commit copies something.
  await execFileAsync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0xab 0 1M', top]);

  const socketPath = path.join(dir, 'qmp.sock');
  qemu = spawn(
    'qemu-system-x86_64',
    [
      '-S',
      '-nodefaults',
      '-display',
      'none',
      '-machine',
      'q35,accel=tcg',
      '-blockdev',
      `driver=file,filename=${base},node-name=f0`,
      '-blockdev',
      'driver=qcow2,file=f0,node-name=v0',
      '-blockdev',
      `driver=file,filename=${top},node-name=f1`,
      '-blockdev',
      'driver=qcow2,file=f1,backing=v0,node-name=v1',
      '-device',
      'virtio-blk-pci,drive=v1,id=disk0',
      '-qmp',
      `unix:${socketPath},server=on,wait=off`,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  qemu.stderr?.setEncoding('utf8');
  qemu.stderr?.on('data', (d: string) => {
    qemuStderr += d;
  });
  client = await connectWithRetry(socketPath, 10_000);
});

afterAll(async () => {
  await client?.close();
  const proc = qemu;
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.kill('SIGTERM');
    const timer = setTimeout(() => proc.kill('SIGKILL'), 3_000);
    await exited;
    clearTimeout(timer);
  }
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('greeting and query-version', async () => {
  expect(client.greeting.QMP.version.qemu.major).toBeGreaterThanOrEqual(7);
  const version = await client.executeParsed('query-version', undefined, qemuVersionSchema);
  expect(version.qemu).toEqual(client.greeting.QMP.version.qemu);
  expect(typeof version.package).toBe('string');
});

test('query-block parses; disk0 chain flattens to [top, base]', async () => {
  const blocks = await client.executeParsed('query-block', undefined, queryBlockSchema);
  const dev = disk0(blocks);
  expect(dev.device).toBe(''); // -blockdev: no BlockBackend name
  expect(dev.qdev).toBe('/machine/peripheral/disk0/virtio-backend');
  expect(dev.inserted?.['node-name']).toBe('v1');
  expect(dev.inserted?.backing_file_depth).toBe(1);
  expect(dev.inserted?.backing_file).toBe(base);
  const image = dev.inserted!.image;
  expect(image.filename.startsWith('json:')).toBe(true); // relative backing path in the header
  expect(image['backing-filename']).toBe('base.qcow2');
  expect(image['full-backing-filename']).toBe(base);
  expect(flattenImageChain(image)).toEqual([top, base]);
});

test('query-named-block-nodes parses (nested and flat)', async () => {
  const nodes = await client.executeParsed('query-named-block-nodes', undefined, queryNamedBlockNodesSchema);
  const byName = new Map(nodes.map((n) => [n['node-name'], n]));
  expect([...byName.keys()].sort()).toEqual(['f0', 'f1', 'v0', 'v1']);
  expect(byName.get('v1')?.drv).toBe('qcow2');
  expect(byName.get('f1')?.drv).toBe('file');
  expect(byName.get('f1')?.file).toBe(top);
  expect(byName.get('v0')?.file).toBe(base);
  expect(flattenImageChain(byName.get('v1')!.image)).toEqual([top, base]);

  const flat = await client.executeParsed('query-named-block-nodes', { flat: true }, queryNamedBlockNodesSchema);
  expect(flat.find((n) => n['node-name'] === 'v1')?.image['backing-image']).toBeUndefined();
});

test('active block-commit: ready, complete (pivot), concluded, dismiss', async () => {
  expect(await client.executeParsed('query-jobs', undefined, queryJobsSchema)).toEqual([]);

  const statuses: JobStatus[] = [];
  const unsubscribe = client.onEvent((e: QmpEvent) => {
    if (e.event !== 'JOB_STATUS_CHANGE') return;
    const data = jobStatusChangeDataSchema.parse(e.data);
    if (data.id === 'j1') statuses.push(data.status);
  });
  const isJ1Status =
    (status: JobStatus) =>
    (e: QmpEvent): boolean =>
      e.event === 'JOB_STATUS_CHANGE' && e.data?.id === 'j1' && e.data?.status === status;

  const ready = client.waitForEvent(isJ1Status('ready'), 10_000);
  await client.execute('block-commit', {
    'job-id': 'j1',
    device: 'v1',
    'top-node': 'v1',
    'base-node': 'v0',
    'auto-dismiss': false,
  });
  await ready;
  const readyJobs = await client.executeParsed('query-jobs', undefined, queryJobsSchema);
  expect(readyJobs).toHaveLength(1);
  expect(readyJobs[0]).toMatchObject({ id: 'j1', type: 'commit', status: 'ready' });
  expect(readyJobs[0]?.['current-progress']).toBe(readyJobs[0]?.['total-progress']);
  const blockJobs = await client.executeParsed('query-block-jobs', undefined, queryBlockJobsSchema);
  expect(blockJobs[0]).toMatchObject({ device: 'j1', type: 'commit', ready: true, status: 'ready', busy: false });

  const concluded = client.waitForEvent(isJ1Status('concluded'), 10_000);
  await client.execute('block-job-complete', { device: 'j1' });
  await concluded;
  const concludedJobs = await client.executeParsed('query-jobs', undefined, queryJobsSchema);
  expect(concludedJobs).toEqual([expect.objectContaining({ id: 'j1', status: 'concluded' })]);
  expect(concludedJobs[0]?.error).toBeUndefined();

  // After the pivot the device runs on the base node.
  const dev = disk0(await client.executeParsed('query-block', undefined, queryBlockSchema));
  expect(dev.inserted?.['node-name']).toBe('v0');
  expect(flattenImageChain(dev.inserted!.image)).toEqual([base]);

  const gone = client.waitForEvent(isJ1Status('null'), 5_000);
  await client.execute('job-dismiss', { id: 'j1' });
  await gone;
  expect(await client.executeParsed('query-jobs', undefined, queryJobsSchema)).toEqual([]);
  unsubscribe();
  expect(statuses).toEqual(['created', 'running', 'ready', 'waiting', 'pending', 'concluded', 'null']);
});

test('unknown command → QmpCommandError CommandNotFound; GenericError for a missing job', async () => {
  const err = await client.execute('no-such-command').catch((e: unknown) => e);
  expect(err).toBeInstanceOf(QmpCommandError);
  expect((err as QmpCommandError).errorClass).toBe('CommandNotFound');
  expect((err as QmpCommandError).desc).toBe('The command no-such-command has not been found');

  await expect(client.execute('job-dismiss', { id: 'nojob' })).rejects.toMatchObject({
    errorClass: 'GenericError',
    desc: 'Job not found',
  });
  expect(client.closed).toBe(false);
});

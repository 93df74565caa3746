/**
 * merge's decisions at the edges, called directly: the space check's boundary, a start that lost
 * a race to a concurrent attempt, and a tombstone that names another base. SimDriver as the QEMU
 * side, real qcow2 files for disk d1 of vm1, v2 (active) -> v1 -> v0, under a temporary root.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { type ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import { SimDriver } from '../../lab/sim/sim-driver';
import type { HostActivities } from '../../src/activities';
import { blockJobId } from '../../src/config/names';
import { imageDir, volumePath } from '../../src/domain/layout';
import { ADAPTIVE_START_BYTES_PER_SEC, type GuestIo } from '../../src/domain/speed';
import type { BlockJob, HypervisorDriver, StartCommit } from '../../src/drivers/driver';
import { VmGoneError } from '../../src/drivers/errors';
import { readFixedSpeed, recordFixedSpeed } from '../../src/storage/speed-record';
import { writeTombstone } from '../../src/storage/tombstone';
import { VolumeUsage } from '../../src/volume-users';
import { failureOf } from '../harness/failure';
import { hostSteps } from '../harness/host-steps';

jest.setTimeout(30_000);
const run = promisify(execFile);
const MiB = 1024 * 1024;
/** The sim's commit of a 16 MiB disk: 16 MiB it can add, plus the margin (64 MiB and 1 % of that). */
const NEEDED = 16 * MiB + 64 * MiB + Math.ceil((16 * MiB) / 100);

let root: string;
const sims: SimDriver[] = [];
let usage: VolumeUsage;

const vol = (id: string): string => volumePath(root, 'd1', id);
const env = (): MockActivityEnvironment => new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') });
const mergeIn = (top: string, base: string) => ({
  vmId: 'vm1',
  diskId: 'd1',
  topVolumeId: top,
  baseVolumeId: base,
  bandwidthBytesPerSec: MiB,
});

function vmOn(freeBytes?: number): SimDriver {
  const sim = new SimDriver({ seed: 1, freeBytes });
  sim.addVm('vm1', [{ diskId: 'd1', volumes: [vol('v2'), vol('v1'), vol('v0')] }]);
  sims.push(sim);
  return sim;
}

const steps = (driver: HypervisorDriver): HostActivities => hostSteps(root, driver, usage);

const refusal = (p: Promise<unknown>): Promise<ApplicationFailure> =>
  failureOf(p, 'expected a refusal, the merge started');

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(tmpdir(), 'lm-merge-'));
  await fs.mkdir(imageDir(root, 'd1'), { recursive: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', vol('v0'), '16M']);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v0.qcow2', '-F', 'qcow2', vol('v1')]);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v1.qcow2', '-F', 'qcow2', vol('v2')]);
  usage = new VolumeUsage(root);
});

afterEach(async () => {
  usage.close();
  for (const sim of sims.splice(0)) await sim.close();
  await fs.rm(root, { recursive: true, force: true });
});

test('free space exactly what the commit needs: it starts; one byte less: InsufficientSpace, nothing started', async () => {
  const enough = vmOn(NEEDED);
  expect(await env().run(steps(enough).merge, mergeIn('v1', 'v0'))).toMatchObject({ outcome: 'started' });
  const short = vmOn(NEEDED - 1);
  const f = await refusal(env().run(steps(short).merge, mergeIn('v1', 'v0')));
  expect(f).toMatchObject({ type: 'InsufficientSpace', nonRetryable: true });
  expect(await short.listJobs('vm1')).toEqual([]);
});

test('an intermediate commit writes the base as a relative name into the overlay above; an active one names none', async () => {
  const sim = vmOn();
  const starts: StartCommit[] = [];
  const watched = Object.assign(Object.create(sim) as SimDriver, {
    startCommit: (vmId: string, r: StartCommit) => (starts.push(r), sim.startCommit(vmId, r)),
  });
  await env().run(steps(watched).merge, mergeIn('v1', 'v0'));
  const chain = await sim.readChain('vm1', 'd1');
  expect(starts[0]).toEqual({
    jobId: blockJobId('d1', 'v1'),
    deviceNode: chain.rootNode,
    topNode: chain.volumes[1].nodeName,
    baseNode: chain.volumes[2].nodeName,
    backingFile: 'v0.qcow2',
    speed: MiB,
  });
  const other = vmOn();
  const activeStarts: StartCommit[] = [];
  const watchedActive = Object.assign(Object.create(other) as SimDriver, {
    startCommit: (vmId: string, r: StartCommit) => (activeStarts.push(r), other.startCommit(vmId, r)),
  });
  expect(await env().run(steps(watchedActive).merge, mergeIn('v2', 'v1'))).toMatchObject({ kind: 'active' });
  expect(activeStarts[0].backingFile).toBeUndefined();
});

test('a start refused because a concurrent attempt started the same job meanwhile: that job is adopted', async () => {
  const sim = vmOn();
  // The other attempt's start lands between this one's job list read and its own start.
  const racing = Object.assign(Object.create(sim) as SimDriver, {
    startCommit: async (vmId: string, r: StartCommit) => {
      await sim.startCommit(vmId, r);
      throw new Error(`Job ID '${r.jobId}' already in use`);
    },
  });
  expect(await env().run(steps(racing).merge, mergeIn('v1', 'v0'))).toEqual({
    outcome: 'adopted',
    jobId: blockJobId('d1', 'v1'),
    kind: 'intermediate',
    chain: ['v2', 'v1', 'v0'],
  });
  expect((await sim.listJobs('vm1')).map((j) => j.id)).toEqual([blockJobId('d1', 'v1')]);
});

test("a start lost to a concurrent attempt while another tool's job runs too: ours is found among them and adopted", async () => {
  const sim = vmOn();
  // Another tool's job (on another node; the simulation has one device) listed before ours.
  const backup: BlockJob = { id: 'backup-1', type: 'backup', status: 'running', offset: 0, len: MiB };
  const racing = Object.assign(Object.create(sim) as SimDriver, {
    listJobs: async (vmId: string) => [backup, ...(await sim.listJobs(vmId))],
    startCommit: async (vmId: string, r: StartCommit) => {
      await sim.startCommit(vmId, r);
      throw new Error(`Job ID '${r.jobId}' already in use`);
    },
  });
  expect(await env().run(steps(racing).merge, mergeIn('v1', 'v0'))).toMatchObject({ outcome: 'adopted' });
  expect((await racing.listJobs('vm1')).map((j) => j.id)).toEqual(['backup-1', blockJobId('d1', 'v1')]);
});

test("a start QEMU refuses with no job of that id: the error is the step's, nothing adopted", async () => {
  const sim = vmOn();
  // A job of another id in QEMU (another tool's) is not this merge's job: nothing to adopt.
  const chain = await sim.readChain('vm1', 'd1');
  const other = { jobId: 'backup-1', deviceNode: chain.rootNode, topNode: chain.volumes[1].nodeName };
  await sim.startCommit('vm1', { ...other, baseNode: chain.volumes[2].nodeName, speed: MiB });
  const refusing = Object.assign(Object.create(sim) as SimDriver, {
    startCommit: () => Promise.reject(new Error('Permission conflict on node')),
  });
  await expect(env().run(steps(refusing).merge, mergeIn('v1', 'v0'))).rejects.toThrow('Permission conflict');
  expect((await sim.listJobs('vm1')).map((j) => j.id)).toEqual(['backup-1']);
});

test('a top out of the chain whose tombstone names another base: VolumeNotInChain, not already merged', async () => {
  const sim = vmOn();
  sim.addVm('vm1', [{ diskId: 'd1', volumes: [vol('v2'), vol('v0')] }]);
  await writeTombstone(root, 'd1', { volumeId: 'v1', mergedInto: 'v7', deletedAt: new Date().toISOString() });
  const f = await refusal(env().run(steps(sim).merge, mergeIn('v1', 'v0')));
  expect(f).toMatchObject({ type: 'VolumeNotInChain', nonRetryable: true });
  expect(f.message).toBe('top volume v1 is not in the chain of disk d1 (v2 -> v0)');
});

test('a top out of the chain and a base out of it too: VolumeNotInChain, though the header names that base', async () => {
  const sim = vmOn();
  sim.addVm('vm1', [{ diskId: 'd1', volumes: [vol('v2')] }]);
  const f = await refusal(env().run(steps(sim).merge, mergeIn('v1', 'v0')));
  expect(f.type).toBe('VolumeNotInChain');
});

test("a running job of another disk does not make this disk busy; this disk's running job does, named", async () => {
  const sim = vmOn();
  sim.addVm('vm1', [
    { diskId: 'd1', volumes: [vol('v2'), vol('v1'), vol('v0')] },
    { diskId: 'd9', volumes: [volumePath(root, 'd9', 'w1'), volumePath(root, 'd9', 'w0')] },
  ]);
  const d9 = await sim.readChain('vm1', 'd9');
  const w1 = { deviceNode: d9.rootNode, topNode: d9.volumes[0].nodeName, baseNode: d9.volumes[1].nodeName };
  await sim.startCommit('vm1', { ...w1, jobId: blockJobId('d9', 'w1'), speed: MiB });
  const acts = steps(sim);
  expect(await env().run(acts.merge, mergeIn('v1', 'v0'))).toMatchObject({ outcome: 'started' });
  const f = await refusal(env().run(acts.merge, mergeIn('v2', 'v1')));
  expect(f).toMatchObject({ type: 'DiskBusy', nonRetryable: true });
  expect(f.message).toBe(`disk d1 already runs block job ${blockJobId('d1', 'v1')} (running); one job per disk`);
});

test('a concluded job of an earlier top, not yet dismissed, does not make the disk busy', async () => {
  const sim = vmOn();
  const acts = steps(sim);
  await env().run(acts.merge, { ...mergeIn('v1', 'v0'), bandwidthBytesPerSec: 0 });
  await env().run(acts.waitForBlockJob, {
    vmId: 'vm1',
    diskId: 'd1',
    jobId: blockJobId('d1', 'v1'),
    pollIntervalMs: 20,
  });
  expect((await sim.listJobs('vm1')).map((j) => j.status)).toEqual(['concluded']);
  await fs.rm(vol('v1')); // the merged top's file gone, as the delete step leaves it (its job not yet dismissed)
  expect(await env().run(acts.merge, mergeIn('v2', 'v0'))).toMatchObject({ outcome: 'started', kind: 'active' });
});

test('the refusals name what they saw: BaseNotBacking with the chain, InsufficientSpace with its figures', async () => {
  const f = await refusal(env().run(steps(vmOn()).merge, mergeIn('v2', 'v0')));
  expect(f.message).toBe('base volume v0 is not the backing of top v2 on disk d1 (v2 -> v1 -> v0)');
  const s = await refusal(env().run(steps(vmOn(MiB)).merge, mergeIn('v1', 'v0')));
  expect(s.message).toContain(`(${16 * MiB} the commit can add to the base, for `);
  expect(s.message).toContain(`plus a margin of ${NEEDED - 16 * MiB}), ${MiB} bytes free in `);
  expect(s.message).toMatch(/; nothing was started$/);
});

test("the space is measured only once the guard passed (its qemu-img would be a user of the top); its failure is the step's", async () => {
  const sim = vmOn();
  let measures = 0;
  const measureFails = Object.assign(Object.create(sim) as SimDriver, {
    measureCommitSpace: () => (measures++, Promise.reject(new Error('qemu-img map failed'))),
  });
  await expect(env().run(steps(measureFails).merge, mergeIn('v1', 'v0'))).rejects.toThrow('qemu-img map failed');
  expect(measures).toBe(1);
  // Another disk's image backed by the base: the guard refuses, and nothing is measured or started.
  await fs.mkdir(imageDir(root, 'd2'), { recursive: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', vol('v0'), '-F', 'qcow2', volumePath(root, 'd2', 'c1')]);
  const f = await refusal(env().run(steps(measureFails).merge, mergeIn('v1', 'v0')));
  expect(f).toMatchObject({ type: 'BaseShared', nonRetryable: true });
  expect(measures).toBe(1);
  expect(await sim.listJobs('vm1')).toEqual([]);
});

describe('the adaptive speed at the start', () => {
  const adaptiveIn = { ...mergeIn('v2', 'v1'), bandwidthBytesPerSec: 0, adaptive: true as const };
  const io = (writeOps: number): GuestIo => ({
    readOps: 0,
    readNs: 0,
    writeOps,
    writeNs: writeOps * 500_000,
    flushOps: 0,
    flushNs: 0,
  });

  /** The sim as a VM whose guest did the given counters at each read, and the starts it saw. */
  function guestVm(reads: Array<GuestIo | Error>) {
    const sim = vmOn();
    const starts: StartCommit[] = [];
    const driver = Object.assign(Object.create(sim) as SimDriver, {
      startCommit: (vmId: string, r: StartCommit) => (starts.push(r), sim.startCommit(vmId, r)),
      guestIo: async () => {
        const next = reads.shift();
        if (next === undefined) throw new Error('read once too often');
        if (next instanceof Error) throw next;
        return next;
      },
    });
    return { driver, starts };
  }

  test('a guest that did I/O while the step checked: a careful start, and the counters for the wait', async () => {
    const { driver, starts } = guestVm([io(100), io(103)]);
    const started = await env().run(steps(driver).merge, adaptiveIn);
    expect(starts[0].speed).toBe(ADAPTIVE_START_BYTES_PER_SEC);
    expect(started).toMatchObject({ outcome: 'started', speedStart: { io: io(103), bytesPerSec: starts[0].speed } });
  });

  test('an idle guest: an unlimited job', async () => {
    const { driver, starts } = guestVm([io(100), io(100)]);
    const started = await env().run(steps(driver).merge, adaptiveIn);
    expect(starts[0].speed).toBe(0);
    expect(started).toMatchObject({ speedStart: { bytesPerSec: 0 } });
  });

  test('counters that cannot be read: a careful start all the same, the wait reads them itself', async () => {
    const { driver, starts } = guestVm([io(100), new Error('no counters')]);
    const started = await env().run(steps(driver).merge, adaptiveIn);
    expect(starts[0].speed).toBe(ADAPTIVE_START_BYTES_PER_SEC);
    expect(started).toMatchObject({ outcome: 'started' });
    expect(started).not.toHaveProperty('speedStart');
  });

  test('a VM gone while the counters are read is the step error it always is', async () => {
    const { driver, starts } = guestVm([new VmGoneError('QMP socket closed')]);
    await expect(env().run(steps(driver).merge, adaptiveIn)).rejects.toMatchObject({ type: 'VmGone' });
    expect(starts).toEqual([]);
  });

  test('the fixed mode reads no counters and starts at its limit', async () => {
    const { driver, starts } = guestVm([]);
    const started = await env().run(steps(driver).merge, mergeIn('v2', 'v1'));
    expect(starts[0].speed).toBe(MiB);
    expect(started).not.toHaveProperty('speedStart');
  });

  test('a new job drops a speed an update fixed for an earlier job on the top', async () => {
    await recordFixedSpeed(root, 'd1', 'v2', 8 * MiB);
    const { driver } = guestVm([io(1), io(1)]);
    await env().run(steps(driver).merge, adaptiveIn);
    expect(await readFixedSpeed(root, 'd1', 'v2')).toBeUndefined();
  });
});

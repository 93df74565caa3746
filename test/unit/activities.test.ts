import { execFile } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { Info } from '@temporalio/activity';
import { CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import { SimDriver } from '../../lab/sim/sim-driver';
import { createHostActivities, type HostActivities } from '../../src/activities';
import type { JobStep, WaitStep } from '../../src/activities/inputs';
import { blockJobId, blockJobPrefix } from '../../src/config/names';
import { imageDir, volumePath } from '../../src/domain/layout';
import type { HypervisorDriver } from '../../src/drivers/driver';
import { readPivotRecord } from '../../src/storage/pivot-record';
import { isBackingOf } from '../../src/storage/qemu-img';
import { Reclaimer, reclaimPath } from '../../src/storage/reclaim';
import { readTombstone } from '../../src/storage/tombstone';
import { VolumeUsage } from '../../src/volume-users';
import { failureOf } from '../harness/failure';

/**
 * The host activities against SimDriver (the QEMU side) and real qcow2 files: disk d1 of VM vm1
 * is v2 (active) -> v1 -> v0 (base), laid out under a temporary storage root.
 */

jest.setTimeout(15_000);

const run = promisify(execFile);
const MiB = 1024 * 1024;
const SLOW = MiB; // bytes/s: a 16 MiB commit at this speed runs 16 s, longer than any test here

let root: string;
let outside: string | undefined;
let sim: SimDriver;
let calls: string[];
let failNext: Map<string, Error>;
let acts: HostActivities;
let reclaimer: Reclaimer;
let usage: VolumeUsage;

/** The host's dependencies as an agent gives them, over `driver`. */
const deps = (driver: HypervisorDriver) => ({
  hostId: 'h1',
  storageRoot: root,
  runDir: root,
  driver,
  reclaimer,
  usage,
});

const vol = (id: string, diskId = 'd1'): string => volumePath(root, diskId, id);
const qemuImg = (...args: string[]): Promise<unknown> => run('qemu-img', args);

/** Creates `ids` as a qcow2 chain in `dir`, base first, each backed by the one before (relative name). */
async function makeChain(dir: string, ids: string[]): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  for (const [i, id] of ids.entries()) {
    const file = path.join(dir, `${id}.qcow2`);
    if (i === 0) await qemuImg('create', '-q', '-f', 'qcow2', file, '16M');
    else await qemuImg('create', '-q', '-f', 'qcow2', '-b', `${ids[i - 1]}.qcow2`, '-F', 'qcow2', file);
  }
}

/** Wraps the driver so that tests see which calls the activities made, and can make one fail. */
function recording(target: SimDriver): HypervisorDriver {
  return new Proxy(target, {
    get(t, prop, receiver) {
      const value: unknown = Reflect.get(t, prop, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]): unknown => {
        const name = String(prop);
        calls.push(name);
        const failure = failNext.get(name);
        if (failure) {
          failNext.delete(name);
          return Promise.reject(failure);
        }
        return (value as (...a: unknown[]) => unknown).apply(t, args);
      };
    },
  });
}

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(tmpdir(), 'lm-activities-'));
  await makeChain(imageDir(root, 'd1'), ['v0', 'v1', 'v2']);
  sim = new SimDriver({ seed: 1, rewriteBackingHeaders: true });
  sim.addVm('vm1', [{ diskId: 'd1', volumes: [vol('v2'), vol('v1'), vol('v0')] }]);
  calls = [];
  failNext = new Map();
  reclaimer = new Reclaimer(root);
  usage = new VolumeUsage(root);
  acts = createHostActivities(deps(recording(sim)));
});

afterEach(async () => {
  usage.close();
  await sim.close();
  await fs.rm(root, { recursive: true, force: true });
  if (outside) await fs.rm(outside, { recursive: true, force: true });
  outside = undefined;
});

function env(info: Partial<Info> = {}): MockActivityEnvironment {
  return new MockActivityEnvironment(info, { logger: new DefaultLogger('ERROR') });
}

const step = (top: string, base: string, diskId = 'd1', vmId = 'vm1') => ({
  vmId,
  diskId,
  baseVolumeId: base,
  topVolumeId: top,
});
const mergeIn = (top: string, base: string, bandwidthBytesPerSec = 0) => ({ ...step(top, base), bandwidthBytesPerSec });
const jobIn = (top: string, vmId = 'vm1'): JobStep => ({ vmId, diskId: 'd1', jobId: blockJobId('d1', top) });
const waitIn = (top: string): WaitStep => ({ ...jobIn(top), pollIntervalMs: 20 });

async function chainOf(diskId = 'd1', vmId = 'vm1'): Promise<string[]> {
  return (await sim.readChain(vmId, diskId)).volumes.map((v) => path.basename(v.path, '.qcow2'));
}

/** Waits until the sim reports the job in `status`. */
async function jobReaches(top: string, status: string): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!(await sim.listJobs('vm1')).some((j) => j.id === blockJobId('d1', top) && j.status === status)) {
    if (Date.now() > deadline) throw new Error(`job of ${top} never reached ${status}`);
    await sim.nextJobChange('vm1', 50);
  }
}

/** merge, wait and verify: the steps before a delete. */
async function mergeThrough(top: string, base: string): Promise<void> {
  await env().run(acts.merge, mergeIn(top, base));
  await env().run(acts.waitForBlockJob, waitIn(top));
  await env().run(acts.verifyChain, step(top, base));
}

describe('merge', () => {
  test('starts an intermediate commit below the active layer', async () => {
    const started = await env().run(acts.merge, mergeIn('v1', 'v0'));
    expect(started).toEqual({ outcome: 'started', jobId: 'lm.d1.v1', kind: 'intermediate', chain: ['v2', 'v1', 'v0'] });
    expect((await sim.listJobs('vm1')).map((j) => j.id)).toEqual(['lm.d1.v1']);
  });

  test('starts an active commit of the active layer', async () => {
    const started = await env().run(acts.merge, mergeIn('v2', 'v1'));
    expect(started).toMatchObject({ outcome: 'started', jobId: 'lm.d1.v2', kind: 'active' });
  });

  test('a second call for the same disk and top adopts the running job', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    const again = await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    expect(again).toMatchObject({ outcome: 'adopted', jobId: 'lm.d1.v1', kind: 'intermediate' });
    expect(await sim.listJobs('vm1')).toHaveLength(1);
    expect(calls.filter((c) => c === 'startCommit')).toHaveLength(1);
  });

  test('a top out of the chain with a tombstone counts as already merged', async () => {
    await mergeThrough('v2', 'v1');
    await env().run(acts.deleteVolume, step('v2', 'v1'));
    await env().run(acts.cleanup, jobIn('v2'));
    expect(existsSync(vol('v2'))).toBe(false);
    const again = await env().run(acts.merge, mergeIn('v2', 'v1'));
    expect(again).toEqual({ outcome: 'alreadyMerged', jobId: 'lm.d1.v2', chain: ['v1', 'v0'] });
    expect(await sim.listJobs('vm1')).toEqual([]);
  });

  test('a top out of the chain whose header names the base counts as already merged', async () => {
    sim.addVm('vm2', [{ diskId: 'd1', volumes: [vol('v0')] }]);
    const again = await env().run(acts.merge, { ...mergeIn('v1', 'v0'), vmId: 'vm2' });
    expect(again).toMatchObject({ outcome: 'alreadyMerged', chain: ['v0'] });
    expect(await sim.listJobs('vm2')).toEqual([]);
  });

  test('a top never in the chain is refused as VolumeNotInChain', async () => {
    const missing = await failureOf(env().run(acts.merge, mergeIn('v9', 'v0')));
    expect(missing).toMatchObject({ type: 'VolumeNotInChain', nonRetryable: true });
    // A file whose header names another base is no evidence of a merge into this one.
    sim.addVm('vm2', [{ diskId: 'd1', volumes: [vol('v0')] }]);
    const other = await failureOf(env().run(acts.merge, { ...mergeIn('v2', 'v0'), vmId: 'vm2' }));
    expect(other).toMatchObject({ type: 'VolumeNotInChain', nonRetryable: true });
    expect(calls).not.toContain('startCommit');
  });

  test('a base that is not the backing of the top is refused as BaseNotBacking', async () => {
    const f = await failureOf(env().run(acts.merge, mergeIn('v2', 'v0')));
    expect(f).toMatchObject({ type: 'BaseNotBacking', nonRetryable: true });
    expect(await sim.listJobs('vm1')).toEqual([]);
  });

  test('another job of ours on the same disk is refused as DiskBusy before QEMU is asked', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    const f = await failureOf(env().run(acts.merge, mergeIn('v2', 'v1')));
    expect(f).toMatchObject({ type: 'DiskBusy', nonRetryable: true });
    expect(calls.filter((c) => c === 'startCommit')).toHaveLength(1);
    expect((await sim.listJobs('vm1')).map((j) => j.id)).toEqual(['lm.d1.v1']);
  });

  test('a base whose file system lacks room for what the commit can add is refused as InsufficientSpace, nothing started', async () => {
    // 16 MiB of the sim's commit plus the 64 MiB margin do not fit in 80 MiB free.
    const tight = new SimDriver({ seed: 1, freeBytes: 80 * MiB });
    tight.addVm('vm1', [{ diskId: 'd1', volumes: [vol('v2'), vol('v1'), vol('v0')] }]);
    const small = createHostActivities(deps(tight));
    try {
      const f = await failureOf(env().run(small.merge, mergeIn('v1', 'v0')));
      expect(f).toMatchObject({ type: 'InsufficientSpace', nonRetryable: true });
      const needed = 16 * MiB + 64 * MiB + Math.ceil((16 * MiB) / 100);
      expect(f.message).toContain(`needs ${needed} bytes`);
      expect(f.message).toContain(`${80 * MiB} bytes free in ${imageDir(root, 'd1')}`);
      expect(await tight.listJobs('vm1')).toEqual([]);
    } finally {
      await tight.close();
    }
  });

  test('the space is measured only before a new job: an adopted job is not measured again', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    expect(calls.filter((c) => c === 'measureCommitSpace')).toHaveLength(1);
    await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    expect(calls.filter((c) => c === 'measureCommitSpace')).toHaveLength(1);
  });

  test('an unknown VM and an unknown disk are refused', async () => {
    expect(await failureOf(env().run(acts.merge, { ...mergeIn('v1', 'v0'), vmId: 'vm9' }))).toMatchObject({
      type: 'VmNotFound',
      nonRetryable: true,
    });
    expect(await failureOf(env().run(acts.merge, { ...mergeIn('v1', 'v0'), diskId: 'd9' }))).toMatchObject({
      type: 'DiskNotFound',
      nonRetryable: true,
    });
  });

  test('invalid ids are refused before the driver is called', async () => {
    for (const bad of [{ diskId: '../x' }, { topVolumeId: '' }, { vmId: 'a/b' }]) {
      const f = await failureOf(env().run(acts.merge, { ...mergeIn('v1', 'v0'), ...bad }));
      expect(f).toMatchObject({ type: 'InvalidMergeInput', nonRetryable: true });
    }
    expect(calls).toEqual([]);
  });
});

describe('waitForBlockJob', () => {
  test('returns concluded for an intermediate commit, and the chain lost the top', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0'));
    const end = await env().run(acts.waitForBlockJob, waitIn('v1'));
    expect(end).toEqual({
      outcome: 'concluded',
      error: undefined,
      offset: 16 * MiB,
      len: 16 * MiB,
      pivotRequested: false,
    });
    expect(await chainOf()).toEqual(['v2', 'v0']);
    expect(calls).not.toContain('completeJob');
  });

  test('pivots an active commit in ready and returns concluded with pivotRequested true', async () => {
    await env().run(acts.merge, mergeIn('v2', 'v1'));
    const end = await env().run(acts.waitForBlockJob, waitIn('v2'));
    expect(end).toMatchObject({ outcome: 'concluded', pivotRequested: true });
    expect((end as { error?: string }).error).toBeUndefined();
    expect(await chainOf()).toEqual(['v1', 'v0']);
    expect(calls.filter((c) => c === 'completeJob')).toHaveLength(1);
  });

  test('a job that turns ready while its list is being read still wakes the wait at once', async () => {
    // Each read returns its snapshot 300 ms late, as a slow read or a progress signal in flight
    // would delay it: the job turns ready in between, and its change must not be lost until the
    // next poll, 10 s later.
    const slowReads: HypervisorDriver = Object.assign(Object.create(sim) as SimDriver, {
      listJobs: async (vmId: string) => {
        const jobs = await sim.listJobs(vmId);
        if (jobs.some((j) => j.status === 'running')) await new Promise((r) => setTimeout(r, 300));
        return jobs;
      },
    });
    const slow = createHostActivities(deps(slowReads));
    await env().run(acts.merge, mergeIn('v2', 'v1', 100 * MiB)); // 16 MiB: ready after about 160 ms
    const t0 = Date.now();
    const end = await env().run(slow.waitForBlockJob, { ...jobIn('v2'), pollIntervalMs: 10_000 });
    expect(end).toMatchObject({ outcome: 'concluded', pivotRequested: true });
    expect(Date.now() - t0).toBeLessThan(3_000);
    expect(await chainOf()).toEqual(['v1', 'v0']);
  });

  test('pivots again when QEMU did not take the first completion', async () => {
    failNext.set('completeJob', new Error('QMP command timed out'));
    await env().run(acts.merge, mergeIn('v2', 'v1'));
    const end = await env().run(acts.waitForBlockJob, waitIn('v2'));
    expect(end).toMatchObject({ outcome: 'concluded', pivotRequested: true });
    expect(await chainOf()).toEqual(['v1', 'v0']);
    expect(calls.filter((c) => c === 'completeJob')).toHaveLength(2);
  });

  test('returns the error of a failed job', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    setTimeout(() => sim.failJob('vm1', 'lm.d1.v1', 'Input/output error'), 50);
    const end = await env().run(acts.waitForBlockJob, waitIn('v1'));
    expect(end).toMatchObject({ outcome: 'concluded', error: 'Input/output error', pivotRequested: false });
    expect(await chainOf()).toEqual(['v2', 'v1', 'v0']);
  });

  test('a job that vanished is reported as vanished, not as success', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    setTimeout(() => sim.vanishJob('vm1', 'lm.d1.v1'), 50);
    expect(await env().run(acts.waitForBlockJob, waitIn('v1'))).toEqual({ outcome: 'vanished', pivotRequested: false });
  });

  test('heartbeats carry offset and len', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0', 64 * MiB));
    const e = env();
    const beats: Array<{ status: string; offset: number; len: number }> = [];
    e.on('heartbeat', (d: { status: string; offset: number; len: number }) => beats.push(d));
    await e.run(acts.waitForBlockJob, waitIn('v1'));
    expect(beats.length).toBeGreaterThan(2);
    expect(beats.every((b) => b.len === 16 * MiB)).toBe(true);
    expect(beats.some((b) => b.status === 'running' && b.offset > 0 && b.offset < b.len)).toBe(true);
    expect(beats[beats.length - 1]).toMatchObject({ status: 'concluded', offset: 16 * MiB });
  });

  test('resumes from heartbeat details with the pivot requested: the job still ready, it asks again', async () => {
    await env().run(acts.merge, mergeIn('v2', 'v1'));
    await jobReaches('v2', 'ready');
    const len = 16 * MiB;
    // The last attempt recorded the request and may have died before QEMU got it.
    const resumed = env({ heartbeatDetails: { status: 'ready', offset: len, len, pivotRequested: true } });
    expect(await resumed.run(acts.waitForBlockJob, waitIn('v2'))).toMatchObject({
      outcome: 'concluded',
      pivotRequested: true,
    });
    expect(calls.filter((c) => c === 'completeJob')).toEqual(['completeJob']);
    expect(await chainOf()).toEqual(['v1', 'v0']);
    expect(await readPivotRecord(root, 'd1', 'v2')).toMatchObject({ confirmedAt: expect.any(String) });
  });

  test('a cancel of the activity ends the wait with CancelledFailure', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    const e = env();
    const waiting = e.run(acts.waitForBlockJob, waitIn('v1'));
    setTimeout(() => e.cancel(), 80);
    await expect(waiting).rejects.toBeInstanceOf(CancelledFailure);
    expect((await sim.listJobs('vm1'))[0]).toMatchObject({ status: 'running' });
  });
});

describe('verifyChain', () => {
  test('passes when the top is gone and the base is present', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0'));
    await env().run(acts.waitForBlockJob, waitIn('v1'));
    expect(await env().run(acts.verifyChain, step('v1', 'v0'))).toEqual({ chain: ['v2', 'v0'] });
  });

  test('fails when the top is still in the chain after a cancel in ready', async () => {
    await env().run(acts.merge, mergeIn('v2', 'v1'));
    await jobReaches('v2', 'ready');
    await env().run(acts.cancelBlockJob, jobIn('v2'));
    const end = await env().run(acts.waitForBlockJob, waitIn('v2'));
    expect(end).toMatchObject({ outcome: 'concluded', pivotRequested: false });
    const f = await failureOf(env().run(acts.verifyChain, step('v2', 'v1')));
    expect(f).toMatchObject({ type: 'ChainVerificationFailed', nonRetryable: true });
  });
});

describe('deleteVolume', () => {
  test('after the merge: detaches the nodes, deletes the file, writes a tombstone; again is a success', async () => {
    await mergeThrough('v2', 'v1');
    expect(await sim.nodesHolding('vm1', vol('v2'))).toHaveLength(2);
    const deleted = await env().run(acts.deleteVolume, step('v2', 'v1'));
    expect(deleted).toEqual({ deleted: true, path: vol('v2') });
    expect(existsSync(vol('v2'))).toBe(false);
    await reclaimer.drain();
    expect(existsSync(reclaimPath(vol('v2')))).toBe(false);
    expect((await fs.readdir(imageDir(root, 'd1'))).sort()).toEqual(['.v2.merged.json', 'v0.qcow2', 'v1.qcow2']);
    expect(await sim.nodesHolding('vm1', vol('v2'))).toEqual([]);
    expect(await readTombstone(root, 'd1', 'v2')).toMatchObject({ volumeId: 'v2', mergedInto: 'v1' });
    expect(await env().run(acts.deleteVolume, step('v2', 'v1'))).toEqual({ deleted: false, path: vol('v2') });
  });

  test('after an intermediate commit: the overlay names the base (relative), and the top goes', async () => {
    await mergeThrough('v1', 'v0');
    const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', vol('v2')]);
    expect(JSON.parse(stdout)).toMatchObject({ 'backing-filename': 'v0.qcow2' });
    expect(await env().run(acts.deleteVolume, step('v1', 'v0'))).toMatchObject({ deleted: true });
    expect(existsSync(vol('v1'))).toBe(false);
    expect(await isBackingOf(vol('v2'), vol('v0'))).toBe(true);
  });

  test('space of a volume deleted by an agent that stopped before reclaiming it is freed by the next agent', async () => {
    await mergeThrough('v2', 'v1');
    await fs.rename(vol('v2'), reclaimPath(vol('v2'))); // what retire() did before the agent stopped
    await expect(reclaimer.sweep()).resolves.toBe(1);
    await reclaimer.drain();
    expect((await fs.readdir(imageDir(root, 'd1'))).filter((f) => f.endsWith('.qcow2')).sort()).toEqual([
      'v0.qcow2',
      'v1.qcow2',
    ]);
  });

  test('refuses a volume still in the chain, file intact', async () => {
    const f = await failureOf(env().run(acts.deleteVolume, step('v1', 'v0')));
    expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
    expect(existsSync(vol('v1'))).toBe(true);
    expect(calls).not.toContain('releaseVolume');
    expect(await sim.nodesHolding('vm1', vol('v1'))).toHaveLength(2);
  });

  test('refuses the active volume, still in the chain and named by no image: the chain check alone stops it', async () => {
    // Nothing on the host but the VM uses v2 (no image is backed by it; the simulated QEMU holds no
    // fd): only deleteVolume's own chain check stands between it and the delete (issue 14).
    const f = await failureOf(env().run(acts.deleteVolume, step('v2', 'v1')));
    expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
    expect(f.message).toBe('volume v2 is still in the chain of disk d1; not deleted');
    expect(existsSync(vol('v2'))).toBe(true);
    expect(calls).not.toContain('releaseVolume');
    expect(await chainOf()).toEqual(['v2', 'v1', 'v0']);
  });

  test("refuses the VM's active volume reached under another disk's name through a symlinked image dir", async () => {
    // images/d2 -> images/d1: d2's v2 is d1's active volume by another name, so the name alone is
    // in no chain; the file is.
    await fs.symlink(imageDir(root, 'd1'), path.join(root, 'images', 'd2'));
    const f = await failureOf(env().run(acts.deleteVolume, { ...step('v2', 'v1'), diskId: 'd2' }));
    expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
    expect(f.message).toBe('volume v2 is still in the chain of disk d1; not deleted');
    expect(existsSync(vol('v2'))).toBe(true);
    expect(calls).not.toContain('releaseVolume');
    expect(await chainOf()).toEqual(['v2', 'v1', 'v0']);
  });

  test('refuses a volume that is the backing file of another image, file intact', async () => {
    await mergeThrough('v2', 'v1');
    await qemuImg(
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      'v2.qcow2',
      '-F',
      'qcow2',
      path.join(imageDir(root, 'd1'), 'clone.qcow2'),
    );
    const f = await failureOf(env().run(acts.deleteVolume, step('v2', 'v1')));
    expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
    expect(f.message).toMatch(/clone/);
    expect(existsSync(vol('v2'))).toBe(true);
  });

  test('refuses a disk whose image dir is a symlink out of the storage root, file intact', async () => {
    outside = await fs.mkdtemp(path.join(tmpdir(), 'lm-outside-'));
    await makeChain(outside, ['b', 't']);
    await fs.symlink(outside, imageDir(root, 'd9'));
    const f = await failureOf(env().run(acts.deleteVolume, step('t', 'b', 'd9')));
    expect(f).toMatchObject({ type: 'PathOutsideStorageRoot', nonRetryable: true });
    expect(existsSync(path.join(outside, 't.qcow2'))).toBe(true);
    expect(calls).toEqual([]);
  });
});

describe('cleanup and cancelBlockJob', () => {
  test('cleanup dismisses a concluded job and is a no-op for a missing one', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0'));
    await env().run(acts.waitForBlockJob, waitIn('v1'));
    expect(await env().run(acts.cleanup, jobIn('v1'))).toEqual({ dismissedJob: true });
    expect(await sim.listJobs('vm1')).toEqual([]);
    expect(await env().run(acts.cleanup, jobIn('v1'))).toEqual({ dismissedJob: false });
  });

  test('cleanup leaves a running job alone and succeeds for a VM that is gone', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    expect(await env().run(acts.cleanup, jobIn('v1'))).toEqual({ dismissedJob: false });
    expect(await sim.listJobs('vm1')).toHaveLength(1);
    sim.removeVm('vm1');
    expect(await env().run(acts.cleanup, jobIn('v1'))).toEqual({ dismissedJob: false });
  });

  test('cancelBlockJob cancels a running job: concluded with an error, chain unchanged', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    expect(await env().run(acts.cancelBlockJob, jobIn('v1'))).toEqual({ finalStatus: 'concluded' });
    expect((await sim.listJobs('vm1'))[0]).toMatchObject({ status: 'concluded', error: 'Operation canceled' });
    expect(await chainOf()).toEqual(['v2', 'v1', 'v0']);
  });

  test('cancelBlockJob cancels a ready job without a pivot', async () => {
    await env().run(acts.merge, mergeIn('v2', 'v1'));
    await jobReaches('v2', 'ready');
    expect(await env().run(acts.cancelBlockJob, jobIn('v2'))).toEqual({ finalStatus: 'concluded' });
    const job = (await sim.listJobs('vm1'))[0];
    expect(job.status).toBe('concluded');
    expect(job.error).toBeUndefined();
    expect(await chainOf()).toEqual(['v2', 'v1', 'v0']);
    expect(calls).not.toContain('completeJob');
  });

  test('a QEMU error other than the VM being gone fails cleanup and cancelBlockJob: retried, not taken for done', async () => {
    await env().run(acts.merge, mergeIn('v1', 'v0', SLOW));
    failNext.set('listJobs', new Error('QMP command timed out'));
    await expect(env().run(acts.cleanup, jobIn('v1'))).rejects.toThrow('QMP command timed out');
    failNext.set('listJobs', new Error('QMP command timed out'));
    await expect(env().run(acts.cancelBlockJob, jobIn('v1'))).rejects.toThrow('QMP command timed out');
    expect((await sim.listJobs('vm1'))[0].status).toBe('running');
  });

  test('cancelBlockJob on a missing job or a gone VM returns without a status', async () => {
    expect(await env().run(acts.cancelBlockJob, jobIn('v1'))).toEqual({ finalStatus: undefined });
    sim.removeVm('vm1');
    expect(await env().run(acts.cancelBlockJob, jobIn('v1'))).toEqual({});
  });
});

describe('block job ids', () => {
  test('no two disks or tops share a job id, and a disk prefix matches only its own jobs', () => {
    expect(blockJobId('d1', 'x-v3')).not.toBe(blockJobId('d1-x', 'v3'));
    expect(blockJobId('d1-x', 'v3').startsWith(blockJobPrefix('d1'))).toBe(false);
  });
});

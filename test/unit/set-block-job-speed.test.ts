import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import { SimDriver } from '../../lab/sim/sim-driver';
import { createHostActivities, type HostActivities } from '../../src/activities';
import { blockJobId } from '../../src/config/names';
import { Reclaimer } from '../../src/storage/reclaim';
import { readFixedSpeed } from '../../src/storage/speed-record';
import { VolumeUsage } from '../../src/volume-users';

/** The setBlockJobSpeed host activity against SimDriver (QEMU's block-job semantics, in memory). */

const MiB = 1024 * 1024;
let sim: SimDriver;
let speeds: Array<[string, number]>;
let acts: HostActivities;
let root: string;
const jobId = blockJobId('d1', 'v1');

beforeEach(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), 'lm-speed-'));
  mkdirSync(path.join(root, 'images', 'd1'), { recursive: true });
  sim = new SimDriver({ seed: 1 });
  sim.addVm('vm1', [
    {
      diskId: 'd1',
      volumes: ['/s/images/d1/v2.qcow2', '/s/images/d1/v1.qcow2', '/s/images/d1/v0.qcow2'],
      sizeBytes: 64 * MiB,
    },
  ]);
  speeds = [];
  const setSpeed = sim.setSpeed.bind(sim);
  sim.setSpeed = async (vmId, id, speed) => {
    speeds.push([id, speed]);
    return setSpeed(vmId, id, speed);
  };
  acts = createHostActivities({
    hostId: 'h1',
    storageRoot: root,
    runDir: '/s',
    driver: sim,
    reclaimer: new Reclaimer('/s'),
    usage: new VolumeUsage('/s'),
  });
});
afterEach(async () => {
  await sim.close();
  rmSync(root, { recursive: true, force: true });
});

const env = () => new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') });

async function startSlowCommit(): Promise<void> {
  const chain = await sim.readChain('vm1', 'd1');
  await sim.startCommit('vm1', {
    jobId,
    deviceNode: chain.rootNode,
    topNode: chain.volumes[1].nodeName,
    baseNode: chain.volumes[2].nodeName,
    speed: MiB,
  });
}

test('a running job takes the new speed; asking twice is harmless', async () => {
  await startSlowCommit();
  const input = { vmId: 'vm1', diskId: 'd1', jobId, bytesPerSec: 4 * MiB };
  expect(await env().run(acts.setBlockJobSpeed, input)).toEqual({ applied: true, jobStatus: 'running' });
  expect(await env().run(acts.setBlockJobSpeed, input)).toEqual({ applied: true, jobStatus: 'running' });
  expect(speeds).toEqual([
    [jobId, 4 * MiB],
    [jobId, 4 * MiB],
  ]);
  // Recorded for an adaptive job's controller, which stands down for it.
  expect(await readFixedSpeed(root, 'd1', 'v1')).toMatchObject({ topVolumeId: 'v1', bytesPerSec: 4 * MiB });
});

test('a job that is not running records no fixed speed', async () => {
  expect(await env().run(acts.setBlockJobSpeed, { vmId: 'vm1', diskId: 'd1', jobId, bytesPerSec: MiB })).toEqual({
    applied: false,
  });
  expect(await readFixedSpeed(root, 'd1', 'v1')).toBeUndefined();
});

test('a job that is not there, or has concluded, is no error: not applied, QEMU not asked', async () => {
  expect(await env().run(acts.setBlockJobSpeed, { vmId: 'vm1', diskId: 'd1', jobId, bytesPerSec: 1 })).toEqual({
    applied: false,
  });
  await startSlowCommit();
  await sim.cancelJob('vm1', jobId);
  const deadline = Date.now() + 3000;
  while (!(await sim.listJobs('vm1')).some((j) => j.status === 'concluded')) {
    if (Date.now() > deadline) throw new Error('job never concluded');
    await sim.nextJobChange('vm1', 50);
  }
  expect(await env().run(acts.setBlockJobSpeed, { vmId: 'vm1', diskId: 'd1', jobId, bytesPerSec: 1 })).toEqual({
    applied: false,
    jobStatus: 'concluded',
  });
  expect(speeds).toEqual([]);
});

test('a VM that is gone is no error either', async () => {
  expect(await env().run(acts.setBlockJobSpeed, { vmId: 'no-vm', diskId: 'd1', jobId, bytesPerSec: 1 })).toEqual({
    applied: false,
  });
});

test('a job that ends between the read and the command: not applied', async () => {
  await startSlowCommit();
  sim.setSpeed = async (vmId, id) => {
    await sim.cancelJob(vmId, id);
    while (!(await sim.listJobs(vmId)).some((j) => j.status === 'concluded')) await sim.nextJobChange(vmId, 50);
    throw new Error(`Job '${id}' in state 'concluded' cannot accept command verb 'set-speed'`);
  };
  expect(await env().run(acts.setBlockJobSpeed, { vmId: 'vm1', diskId: 'd1', jobId, bytesPerSec: 1 })).toEqual({
    applied: false,
    jobStatus: 'concluded',
  });
});

test('QEMU refusing the speed of a job that still runs fails the step: the speed was not applied', async () => {
  await startSlowCommit();
  sim.setSpeed = async () => {
    throw new Error('QMP command timed out');
  };
  await expect(env().run(acts.setBlockJobSpeed, { vmId: 'vm1', diskId: 'd1', jobId, bytesPerSec: 1 })).rejects.toThrow(
    'QMP command timed out',
  );
});

test('a negative speed is refused before QEMU is asked, naming the field', async () => {
  await startSlowCommit();
  const err = await env()
    .run(acts.setBlockJobSpeed, { vmId: 'vm1', diskId: 'd1', jobId, bytesPerSec: -5 })
    .catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ApplicationFailure);
  expect((err as ApplicationFailure).type).toBe('InvalidMergeInput');
  expect((err as ApplicationFailure).message).toMatch(/bytesPerSec/);
  expect(speeds).toEqual([]);
});

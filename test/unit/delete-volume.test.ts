/**
 * deleteVolume's own checks and its order towards QEMU, called directly (not through the workflow,
 * whose chain check stops earlier): SimDriver as the QEMU side, real qcow2 files for disk d1 of
 * vm1, v2 (active) -> v1 -> v0, under a temporary storage root. The refusals of the guard itself
 * are in volume-guard.test.ts; the same steps on real QEMU in test/qemu/guards.test.ts.
 */
import { execFile } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { type ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import { SimDriver } from '../../lab/sim/sim-driver';
import { createHostActivities, type HostActivities } from '../../src/activities';
import { blockJobId } from '../../src/config/names';
import { imageDir, volumePath } from '../../src/domain/layout';
import type { HypervisorDriver } from '../../src/drivers/driver';
import { Reclaimer } from '../../src/storage/reclaim';
import { readTombstone } from '../../src/storage/tombstone';
import { VolumeUsage } from '../../src/volume-users';
import { failureOf } from '../harness/failure';

jest.setTimeout(30_000);
const run = promisify(execFile);
const MiB = 1024 * 1024;

let root: string;
let sim: SimDriver;
let usage: VolumeUsage;
let reclaimer: Reclaimer;
let acts: HostActivities;
/** Every request the steps sent to the hypervisor, in order, with its arguments after the VM id. */
let requests: string[];

const vol = (id: string, diskId = 'd1'): string => volumePath(root, diskId, id);
const env = (): MockActivityEnvironment => new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') });
const step = (top: string, base: string, diskId = 'd1') => ({
  vmId: 'vm1',
  diskId,
  topVolumeId: top,
  baseVolumeId: base,
});

/** The driver, recording each request it is sent. */
function recording(target: SimDriver): HypervisorDriver {
  return new Proxy(target, {
    get(t, prop, receiver) {
      const value: unknown = Reflect.get(t, prop, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]): unknown => {
        requests.push([String(prop), ...args.slice(1).map((a) => (typeof a === 'string' ? a : '…'))].join(' '));
        return (value as (...a: unknown[]) => unknown).apply(t, args);
      };
    },
  });
}

const refusal = (p: Promise<unknown>): Promise<ApplicationFailure> =>
  failureOf(p, 'expected a refusal, the delete went on');

/** An intermediate commit of v1 into v0, run to its end and checked, as the workflow does before a delete. */
async function mergeV1(): Promise<void> {
  await env().run(acts.merge, { ...step('v1', 'v0'), bandwidthBytesPerSec: 0 });
  await env().run(acts.waitForBlockJob, {
    vmId: 'vm1',
    diskId: 'd1',
    jobId: blockJobId('d1', 'v1'),
    pollIntervalMs: 20,
  });
  await env().run(acts.verifyChain, step('v1', 'v0'));
}

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(tmpdir(), 'lm-delete-'));
  await fs.mkdir(imageDir(root, 'd1'), { recursive: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', vol('v0'), '16M']);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v0.qcow2', '-F', 'qcow2', vol('v1')]);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v1.qcow2', '-F', 'qcow2', vol('v2')]);
  sim = new SimDriver({ seed: 1, rewriteBackingHeaders: true });
  sim.addVm('vm1', [{ diskId: 'd1', volumes: [vol('v2'), vol('v1'), vol('v0')] }]);
  usage = new VolumeUsage(root);
  reclaimer = new Reclaimer(root);
  requests = [];
  acts = createHostActivities({
    hostId: 'h1',
    storageRoot: root,
    runDir: root,
    driver: recording(sim),
    reclaimer,
    usage,
  });
});

afterEach(async () => {
  usage.close();
  await reclaimer.drain();
  await sim.close();
  await fs.rm(root, { recursive: true, force: true });
});

test("the base's node is flushed before the VM lets go of the top: the top is the committed data's only other copy", async () => {
  await mergeV1();
  const baseNode = (await sim.readChain('vm1', 'd1')).volumes[1].nodeName;
  requests = [];
  expect(await env().run(acts.deleteVolume, step('v1', 'v0'))).toEqual({ deleted: true, path: vol('v1') });
  const flush = requests.indexOf(`flushNode ${baseNode}`);
  const release = requests.indexOf(`releaseVolume ${vol('v1')}`);
  expect(flush).toBeGreaterThanOrEqual(0);
  expect(release).toBeGreaterThan(flush);
});

test('the concluded commit job is dismissed before the VM lets go of the top, and QEMU keeps no job or node of it', async () => {
  await mergeV1();
  requests = [];
  await env().run(acts.deleteVolume, step('v1', 'v0'));
  expect(await sim.listJobs('vm1')).toEqual([]);
  expect(await sim.nodesHolding('vm1', vol('v1'))).toEqual([]);
  const dismiss = requests.indexOf(`dismissJob ${blockJobId('d1', 'v1')}`);
  expect(dismiss).toBeGreaterThanOrEqual(0);
  expect(dismiss).toBeLessThan(requests.indexOf(`releaseVolume ${vol('v1')}`));
});

test("a block job under the volume's id that has not concluded: VolumeInUse, file kept, job left running", async () => {
  // A job an earlier attempt started for x9 (out of every chain), still copying.
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', vol('x9'), '16M']);
  const chain = await sim.readChain('vm1', 'd1');
  const jobId = blockJobId('d1', 'x9');
  await sim.startCommit('vm1', {
    jobId,
    deviceNode: chain.rootNode,
    topNode: chain.volumes[1].nodeName,
    baseNode: chain.volumes[2].nodeName,
    speed: MiB, // 16 MiB at 1 MiB/s: running throughout the test
  });
  const f = await refusal(env().run(acts.deleteVolume, step('x9', 'v0')));
  expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
  expect(f.message).toBe(`volume x9 is still used by block job ${jobId} (running); not deleted`);
  expect(existsSync(vol('x9'))).toBe(true);
  expect(await readTombstone(root, 'd1', 'x9')).toBeUndefined();
  expect((await sim.listJobs('vm1')).map((j) => [j.id, j.status])).toEqual([[jobId, 'running']]);
});

test("another volume's running block job does not hold this one: the loose top is deleted, that job left running", async () => {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', vol('x9'), '1M']);
  const chain = await sim.readChain('vm1', 'd1');
  const other = blockJobId('d1', 'v1');
  await sim.startCommit('vm1', {
    jobId: other,
    deviceNode: chain.rootNode,
    topNode: chain.volumes[1].nodeName,
    baseNode: chain.volumes[2].nodeName,
    speed: MiB, // 16 MiB at 1 MiB/s: running throughout the test
  });
  expect(await env().run(acts.deleteVolume, step('x9', 'v0'))).toEqual({ deleted: true, path: vol('x9') });
  expect(existsSync(vol('x9'))).toBe(false);
  expect(requests.filter((r) => r.startsWith('dismissJob'))).toEqual([]);
  expect((await sim.listJobs('vm1')).map((j) => [j.id, j.status])).toEqual([[other, 'running']]);
});

test('a volume whose name is a symlink loop cannot be resolved: the delete fails, the link and the chain stay', async () => {
  await fs.symlink('x8.qcow2', vol('x8'));
  await expect(env().run(acts.deleteVolume, step('x8', 'v0'))).rejects.toThrow(/ELOOP/);
  expect((await fs.lstat(vol('x8'))).isSymbolicLink()).toBe(true);
  expect(await readTombstone(root, 'd1', 'x8')).toBeUndefined();
  expect(requests.filter((r) => r.startsWith('releaseVolume') || r.startsWith('dismissJob'))).toEqual([]);
});

test("a volume name that is a symlink to the VM's active volume: VolumeInUse by the file, link and target kept", async () => {
  // images/d2/v5.qcow2 -> ../d1/v2.qcow2: a name in no chain, whose file is d1's active volume.
  await fs.mkdir(imageDir(root, 'd2'));
  await fs.symlink('../d1/v2.qcow2', volumePath(root, 'd2', 'v5'));
  const f = await refusal(env().run(acts.deleteVolume, step('v5', 'v1', 'd2')));
  expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
  expect(f.message).toBe('volume v5 is still in the chain of disk d1; not deleted');
  expect((await fs.lstat(volumePath(root, 'd2', 'v5'))).isSymbolicLink()).toBe(true);
  expect(existsSync(vol('v2'))).toBe(true);
  expect(requests.filter((r) => r.startsWith('releaseVolume') || r.startsWith('dismissJob'))).toEqual([]);
});

test('a base in no chain of the VM: nothing to flush, and the loose top is still deleted', async () => {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', vol('x9'), '1M']);
  expect(await env().run(acts.deleteVolume, step('x9', 'x8'))).toEqual({ deleted: true, path: vol('x9') });
  expect(requests.filter((r) => r.startsWith('flushNode'))).toEqual([]);
  expect(existsSync(vol('x9'))).toBe(false);
});

describe('chain volumes that are no file of this host', () => {
  /** A network volume as QEMU names it when it cannot write a URL: longer than a file name may be. */
  const NBD_SPEC = `json:${JSON.stringify({
    driver: 'qcow2',
    file: {
      driver: 'nbd',
      server: { type: 'inet', host: 'storage-01.example.net', port: '10809' },
      export: `vm1-disk-n2-${'0123456789'.repeat(16)}`,
      'tls-creds': 'tls0',
    },
  })}`;

  test('a repeated delete on a VM with network volumes succeeds: the second finds the file gone', async () => {
    expect(NBD_SPEC.length).toBeGreaterThan(255);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', vol('x9'), '1M']);
    sim.addVm('vm1', [
      { diskId: 'd1', volumes: [vol('v2'), vol('v1'), vol('v0')] },
      { diskId: 'n1', volumes: ['nbd://storage-01.example.net:10809/vm1-n1'] },
      { diskId: 'n2', volumes: [NBD_SPEC] },
    ]);
    expect(await env().run(acts.deleteVolume, step('x9', 'v0'))).toEqual({ deleted: true, path: vol('x9') });
    expect(await env().run(acts.deleteVolume, step('x9', 'v0'))).toEqual({ deleted: false, path: vol('x9') });
    expect(existsSync(vol('x9'))).toBe(false);
    expect(await readTombstone(root, 'd1', 'x9')).toMatchObject({ volumeId: 'x9', mergedInto: 'v0' });
  });

  test('a repeated delete on a VM that holds unlinked files succeeds: one in its directory, one whose directory is gone', async () => {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', vol('x9'), '1M']);
    await fs.mkdir(imageDir(root, 'd2'));
    await fs.mkdir(imageDir(root, 'd3'));
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', volumePath(root, 'd2', 'w0'), '1M']);
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', volumePath(root, 'd3', 'u0'), '1M']);
    sim.addVm('vm1', [
      { diskId: 'd1', volumes: [vol('v2'), vol('v1'), vol('v0')] },
      { diskId: 'd2', volumes: [volumePath(root, 'd2', 'w0')] },
      { diskId: 'd3', volumes: [volumePath(root, 'd3', 'u0')] },
    ]);
    // Unlinked while QEMU holds them: QEMU still reports them by their old names.
    await fs.unlink(volumePath(root, 'd2', 'w0'));
    await fs.rm(imageDir(root, 'd3'), { recursive: true });
    expect(await env().run(acts.deleteVolume, step('x9', 'v0'))).toEqual({ deleted: true, path: vol('x9') });
    expect(await env().run(acts.deleteVolume, step('x9', 'v0'))).toEqual({ deleted: false, path: vol('x9') });
    expect(existsSync(vol('x9'))).toBe(false);
  });

  test('the top unlinked while QEMU holds it is still in the chain: VolumeInUse, QEMU keeps it', async () => {
    await fs.unlink(vol('v1'));
    const f = await refusal(env().run(acts.deleteVolume, step('v1', 'v0')));
    expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
    expect(f.message).toBe('volume v1 is still in the chain of disk d1; not deleted');
    expect(await sim.nodesHolding('vm1', vol('v1'))).not.toEqual([]);
    expect(await readTombstone(root, 'd1', 'v1')).toBeUndefined();
  });
});

describe('a chain volume whose name cannot be resolved: the delete refuses, nothing touched', () => {
  async function refusedWith(chainVolume: string, error: RegExp): Promise<void> {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', vol('x9'), '1M']);
    sim.addVm('vm1', [
      { diskId: 'd1', volumes: [vol('v2'), vol('v1'), vol('v0')] },
      { diskId: 'd2', volumes: [chainVolume] },
    ]);
    requests = [];
    await expect(env().run(acts.deleteVolume, step('x9', 'v0'))).rejects.toThrow(error);
    expect(existsSync(vol('x9'))).toBe(true);
    expect(await readTombstone(root, 'd1', 'x9')).toBeUndefined();
    expect(requests).toEqual(['readAllChains']);
  }

  test('its directory is a symlink loop', async () => {
    await fs.symlink('loop', path.join(root, 'images', 'loop'));
    await refusedWith(path.join(root, 'images', 'loop', 'w0.qcow2'), /ELOOP/);
  });

  test('its directory is a file', async () => {
    await refusedWith(path.join(vol('v0'), 'w0.qcow2'), /ENOTDIR/);
  });

  test('it is a symlink loop', async () => {
    await fs.symlink('w0.qcow2', vol('w0'));
    await refusedWith(vol('w0'), /ELOOP/);
  });
});

describe('an image directory that does not resolve: ImageDirMissingError before anything is asked of QEMU', () => {
  async function refused(): Promise<void> {
    // The VM still has the disk: its base would be flushed, the top released, a tombstone written.
    sim.addVm('vm1', [
      { diskId: 'd1', volumes: [vol('v2'), vol('v1'), vol('v0')] },
      { diskId: 'd3', volumes: [volumePath(root, 'd3', 'w1'), volumePath(root, 'd3', 'w0')] },
    ]);
    requests = [];
    const err = await env()
      .run(acts.deleteVolume, step('x9', 'w0', 'd3'))
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(Error);
    expect(err).toMatchObject({
      name: 'ImageDirMissingError',
      message: `image directory ${imageDir(root, 'd3')} does not resolve; nothing was touched`,
    });
    expect(requests).toEqual([]);
  }

  test('a dangling symlink', async () => {
    await fs.symlink(path.join(root, 'unmounted', 'd3'), imageDir(root, 'd3'));
    await refused();
    expect((await fs.lstat(imageDir(root, 'd3'))).isSymbolicLink()).toBe(true);
    expect(await fs.readdir(path.join(root, 'images'))).toEqual(['d1', 'd3']);
  });

  test('a missing directory', async () => {
    await refused();
    expect(await fs.readdir(path.join(root, 'images'))).toEqual(['d1']);
  });
});

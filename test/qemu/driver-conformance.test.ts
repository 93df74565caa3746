import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { createLabVm, destroyLabVm, labDiskId, labVolumeId, runningLabVmPid } from '../../lab/vm';
import { volumePath } from '../../src/domain/layout';
import type { BlockJob, DiskChain, HypervisorDriver } from '../../src/host/driver';
import { DiskNotFoundError, VmGoneError, VmNotFoundError } from '../../src/host/errors';
import { QmpDriver } from '../../src/host/qmp-driver';
import { SimDriver } from '../../src/host/sim-driver';
import { QmpCommandError } from '../../src/qmp/errors';

/**
 * One conformance suite, two drivers: every behaviour the host activities rely on is checked
 * against QmpDriver on a real QEMU lab VM and against SimDriver on a VM with the same paths.
 * Each case gets a fresh VM with 2 disks of 3 volumes: `d<d>v2` (active) -> `d<d>v1` -> `d<d>v0`.
 */

const MiB = 1024 * 1024;
/** A speed that keeps a commit running for seconds (the lab top holds 2 MiB; the sim top 16 MiB). */
const SLOW = 128 * 1024;

interface Fixture {
  driver: HypervisorDriver;
  storageRoot: string;
  /** A fresh running VM; returns its id. */
  newVm(): Promise<string>;
  /** QEMU dies (SIGKILL), its socket left behind. */
  killVm(vmId: string): Promise<void>;
  close(): Promise<void>;
}

function tmpRoot(): { dir: string; storageRoot: string; runDir: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lm-conf-'));
  return { dir, storageRoot: path.join(dir, 's'), runDir: path.join(dir, 'r') };
}

async function qmpFixture(): Promise<Fixture> {
  const { dir, storageRoot, runDir } = tmpRoot();
  const driver = new QmpDriver(runDir);
  const vms: string[] = [];
  return {
    driver,
    storageRoot,
    async newVm() {
      const vmId = `vm${vms.length}`;
      vms.push(vmId);
      // Each VM its own storage root: the lab refuses two running VMs on one.
      await createLabVm({
        storageRoot: path.join(storageRoot, vmId),
        runDir,
        vmId,
        disks: 2,
        volumes: 3,
        layerDataMiB: 1,
        sizeMiB: 8,
        guest: false, // paused, no guest OS: the conformance cases need no writes
      });
      return vmId;
    },
    async killVm(vmId) {
      const pid = await runningLabVmPid(runDir, vmId);
      if (pid === undefined) throw new Error(`lab VM ${vmId} is not running`);
      process.kill(pid, 'SIGKILL');
      while ((await runningLabVmPid(runDir, vmId)) !== undefined) await new Promise((r) => setTimeout(r, 20));
    },
    async close() {
      await driver.close();
      for (const vmId of vms) await destroyLabVm(runDir, vmId).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function simFixture(): Promise<Fixture> {
  const { dir, storageRoot } = tmpRoot();
  const driver = new SimDriver({ seed: 7, bytesPerSecond: 256 * MiB });
  let n = 0;
  return {
    driver,
    storageRoot,
    async newVm() {
      const vmId = `vm${n++}`;
      const root = path.join(storageRoot, vmId);
      driver.addVm(
        vmId,
        [0, 1].map((d) => ({
          diskId: labDiskId(d),
          volumes: [2, 1, 0].map((i) => volumePath(root, labDiskId(d), labVolumeId(d, i))),
          sizeBytes: 16 * MiB,
        })),
      );
      return vmId;
    },
    async killVm(vmId) {
      driver.removeVm(vmId);
    },
    async close() {
      await driver.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const names = (chain: DiskChain): string[] => chain.volumes.map((v) => path.basename(v.path, '.qcow2'));
const nodeOf = (chain: DiskChain, volumeId: string): string => {
  const v = chain.volumes.find((x) => path.basename(x.path, '.qcow2') === volumeId);
  if (!v) throw new Error(`${volumeId} not in ${names(chain).join(' -> ')}`);
  return v.nodeName;
};

describe.each([
  ['QmpDriver (real QEMU)', qmpFixture],
  ['SimDriver', simFixture],
])('HypervisorDriver conformance: %s', (_name, makeFixture) => {
  let fx: Fixture;
  let driver: HypervisorDriver;
  beforeAll(async () => {
    fx = await makeFixture();
    driver = fx.driver;
  });
  afterAll(async () => fx?.close());

  async function job(vmId: string, id = 'j1'): Promise<BlockJob | undefined> {
    return (await driver.listJobs(vmId)).find((j) => j.id === id);
  }

  /** Waits on job events (bounded) until the job satisfies `ok`. */
  async function until(
    vmId: string,
    ok: (j: BlockJob | undefined) => boolean,
    id = 'j1',
    timeoutMs = 20_000,
  ): Promise<BlockJob | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const j = await job(vmId, id);
      if (ok(j)) return j;
      if (Date.now() > deadline) throw new Error(`job ${id} never matched; last ${JSON.stringify(j)}`);
      await driver.nextJobChange(vmId, 100);
    }
  }

  async function commit(
    vmId: string,
    top: string,
    base: string,
    extra: { speed?: number; backingFile?: string; jobId?: string } = {},
  ) {
    const chain = await driver.readChain(vmId, 'disk0');
    await driver.startCommit(vmId, {
      jobId: extra.jobId ?? 'j1',
      deviceNode: chain.rootNode,
      topNode: nodeOf(chain, top),
      baseNode: nodeOf(chain, base),
      speed: extra.speed ?? 0,
      ...(extra.backingFile === undefined ? {} : { backingFile: extra.backingFile }),
    });
  }

  test('reads every chain active layer first, one node per volume, the device on the active node', async () => {
    const vmId = await fx.newVm();
    const chains = await driver.readAllChains(vmId);
    expect(chains.map((c) => c.diskId).sort()).toEqual(['disk0', 'disk1']);
    const chain = await driver.readChain(vmId, 'disk0');
    expect(names(chain)).toEqual(['d0v2', 'd0v1', 'd0v0']);
    expect(chain.volumes[0].path).toBe(volumePath(path.join(fx.storageRoot, vmId), 'disk0', 'd0v2'));
    expect(chain.rootNode).toBe(chain.volumes[0].nodeName);
    expect(new Set(chain.volumes.map((v) => v.nodeName)).size).toBe(3);
    expect(await driver.listJobs(vmId)).toEqual([]);
  });

  test('unknown VM, unknown disk, and a VM whose QEMU died throw the host errors', async () => {
    const vmId = await fx.newVm();
    await expect(driver.readChain('no-such-vm', 'disk0')).rejects.toBeInstanceOf(VmNotFoundError);
    await expect(driver.readChain(vmId, 'disk9')).rejects.toBeInstanceOf(DiskNotFoundError);
    await driver.listJobs(vmId);
    await fx.killVm(vmId);
    await expect(driver.listJobs(vmId)).rejects.toBeInstanceOf(VmGoneError);
  });

  test('an intermediate commit concludes by itself, drops the top, and stays concluded until dismissed', async () => {
    const vmId = await fx.newVm();
    await commit(vmId, 'd0v1', 'd0v0', { backingFile: 'd0v0.qcow2' });
    const done = await until(vmId, (j) => j?.status === 'concluded');
    expect(done).toMatchObject({ type: 'commit', status: 'concluded' });
    expect(done?.error).toBeUndefined();
    expect(done?.offset).toBe(done?.len);
    expect(names(await driver.readChain(vmId, 'disk0'))).toEqual(['d0v2', 'd0v0']);
    expect(names(await driver.readChain(vmId, 'disk1'))).toEqual(['d1v2', 'd1v1', 'd1v0']);
    await new Promise((r) => setTimeout(r, 50));
    expect(await job(vmId)).toMatchObject({ status: 'concluded' });
    await driver.dismissJob(vmId, 'j1');
    expect(await driver.listJobs(vmId)).toEqual([]);
    await driver.dismissJob(vmId, 'j1'); // a missing job: a no-op
  });

  test('an active commit waits in ready with offset == len; completing it pivots onto the base', async () => {
    const vmId = await fx.newVm();
    await commit(vmId, 'd0v2', 'd0v1');
    const ready = await until(vmId, (j) => j?.status === 'ready');
    expect(ready?.offset).toBe(ready?.len);
    expect(names(await driver.readChain(vmId, 'disk0'))).toEqual(['d0v2', 'd0v1', 'd0v0']);
    await driver.completeJob(vmId, 'j1');
    const done = await until(vmId, (j) => j?.status === 'concluded');
    expect(done?.error).toBeUndefined();
    const chain = await driver.readChain(vmId, 'disk0');
    expect(names(chain)).toEqual(['d0v1', 'd0v0']);
    expect(chain.rootNode).toBe(chain.volumes[0].nodeName);
  });

  test('a cancel in ready concludes without error and without pivot', async () => {
    const vmId = await fx.newVm();
    await commit(vmId, 'd0v2', 'd0v1');
    await until(vmId, (j) => j?.status === 'ready');
    await driver.cancelJob(vmId, 'j1');
    const done = await until(vmId, (j) => j?.status === 'concluded');
    expect(done?.error).toBeUndefined();
    expect(names(await driver.readChain(vmId, 'disk0'))).toEqual(['d0v2', 'd0v1', 'd0v0']);
  });

  test('a cancel while running concludes with an error, chain unchanged; pivot before ready is refused', async () => {
    const vmId = await fx.newVm();
    await commit(vmId, 'd0v1', 'd0v0', { speed: SLOW, backingFile: 'd0v0.qcow2' });
    expect((await job(vmId))?.status).toBe('running');
    await expect(driver.completeJob(vmId, 'j1')).rejects.toBeInstanceOf(QmpCommandError);
    await driver.cancelJob(vmId, 'j1');
    const done = await until(vmId, (j) => j?.status === 'concluded');
    expect(done?.error).toMatch(/cancel/i);
    expect(names(await driver.readChain(vmId, 'disk0'))).toEqual(['d0v2', 'd0v1', 'd0v0']);
    await expect(driver.cancelJob(vmId, 'j1')).rejects.toBeInstanceOf(QmpCommandError);
    await expect(driver.completeJob(vmId, 'nope')).rejects.toBeInstanceOf(QmpCommandError);
  });

  test('one job per disk: a second commit on a busy disk and a duplicate job id are refused', async () => {
    const vmId = await fx.newVm();
    await commit(vmId, 'd0v1', 'd0v0', { speed: SLOW, backingFile: 'd0v0.qcow2' });
    await expect(commit(vmId, 'd0v2', 'd0v1', { jobId: 'j2' })).rejects.toBeInstanceOf(QmpCommandError);
    const other = await driver.readChain(vmId, 'disk1');
    await expect(
      driver.startCommit(vmId, {
        jobId: 'j1',
        deviceNode: other.rootNode,
        topNode: nodeOf(other, 'd1v1'),
        baseNode: nodeOf(other, 'd1v0'),
        speed: 0,
      }),
    ).rejects.toBeInstanceOf(QmpCommandError);
    await expect(commit(vmId, 'd0v2', 'd0v1', { jobId: 'j3', backingFile: 'x.qcow2' })).rejects.toBeInstanceOf(
      QmpCommandError,
    );
    // setSpeed lifts the limit: the job finishes.
    await driver.setSpeed(vmId, 'j1', 0);
    expect((await until(vmId, (j) => j?.status === 'concluded'))?.error).toBeUndefined();
  });

  test('the removed top stays open until deleted: the job must be dismissed, format node before file node', async () => {
    const vmId = await fx.newVm();
    const before = await driver.readChain(vmId, 'disk0');
    const topPath = before.volumes[1].path;
    await commit(vmId, 'd0v1', 'd0v0', { backingFile: 'd0v0.qcow2' });
    await until(vmId, (j) => j?.status === 'concluded');
    const held = await driver.nodesHolding(vmId, topPath);
    expect(held).toHaveLength(2);
    expect(held[0]).toBe(nodeOf(before, 'd0v1'));
    // A node still in a chain is refused.
    await expect(driver.deleteNode(vmId, nodeOf(before, 'd0v0'))).rejects.toBeInstanceOf(QmpCommandError);
    await driver.dismissJob(vmId, 'j1');
    await expect(driver.deleteNode(vmId, held[1])).rejects.toBeInstanceOf(QmpCommandError); // file under its format node
    for (const node of held) await driver.deleteNode(vmId, node);
    expect(await driver.nodesHolding(vmId, topPath)).toEqual([]);
    await driver.flushNode(vmId, nodeOf(before, 'd0v0'));
    await expect(driver.flushNode(vmId, 'no-such-node')).rejects.toThrow();
  });

  test('nextJobChange resolves on a job status change, or after its timeout', async () => {
    const vmId = await fx.newVm();
    let t = Date.now();
    await driver.nextJobChange(vmId, 150);
    expect(Date.now() - t).toBeGreaterThanOrEqual(140);
    await commit(vmId, 'd0v1', 'd0v0', { speed: SLOW, backingFile: 'd0v0.qcow2' });
    t = Date.now();
    const woken = driver.nextJobChange(vmId, 10_000);
    await driver.cancelJob(vmId, 'j1');
    await woken;
    expect(Date.now() - t).toBeLessThan(2_000);
    await expect(driver.nextJobChange('no-such-vm', 10)).rejects.toBeInstanceOf(VmNotFoundError);
    // Disarmed by its signal: resolves at once, however long its timeout.
    const turn = new AbortController();
    t = Date.now();
    const disarmed = driver.nextJobChange(vmId, 10_000, turn.signal);
    turn.abort();
    await disarmed;
    expect(Date.now() - t).toBeLessThan(1_000);
  });
});

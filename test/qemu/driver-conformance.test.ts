import { existsSync } from 'node:fs';
import * as path from 'node:path';

import { SimDriver } from '../../lab/sim/sim-driver';
import { volumePath } from '../../src/domain/layout';
import type { BlockJob, DiskChain, HypervisorDriver } from '../../src/drivers/driver';
import { DiskNotFoundError, VmGoneError, VmNotFoundError } from '../../src/drivers/errors';
import { type Fixture, libvirtFixture, qmpFixture, simFixture, SLOW } from './driver-fixtures';

/**
 * One conformance suite, three drivers: every behaviour the host activities rely on is checked
 * against QmpDriver on a real QEMU lab VM, against LibvirtDriver on a libvirt domain on the same
 * chains (scripts/ensure-libvirt.sh runs libvirtd), and against SimDriver on a VM with the same paths.
 * Each case gets a fresh VM with 2 disks of 3 volumes: `d<d>v2` (active) -> `d<d>v1` -> `d<d>v0`.
 */

const names = (chain: DiskChain): string[] => chain.volumes.map((v) => path.basename(v.path, '.qcow2'));
const nodeOf = (chain: DiskChain, volumeId: string): string => {
  const v = chain.volumes.find((x) => path.basename(x.path, '.qcow2') === volumeId);
  if (!v) throw new Error(`${volumeId} not in ${names(chain).join(' -> ')}`);
  return v.nodeName;
};

describe.each([
  ['QmpDriver (real QEMU)', qmpFixture],
  ['SimDriver', simFixture],
  ['LibvirtDriver (libvirt, real QEMU)', libvirtFixture],
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
  async function untilJob(
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
    const done = await untilJob(vmId, (j) => j?.status === 'concluded');
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
    const ready = await untilJob(vmId, (j) => j?.status === 'ready');
    expect(ready?.offset).toBe(ready?.len);
    expect(names(await driver.readChain(vmId, 'disk0'))).toEqual(['d0v2', 'd0v1', 'd0v0']);
    await driver.completeJob(vmId, 'j1');
    const done = await untilJob(vmId, (j) => j?.status === 'concluded');
    expect(done?.error).toBeUndefined();
    const chain = await driver.readChain(vmId, 'disk0');
    expect(names(chain)).toEqual(['d0v1', 'd0v0']);
    expect(chain.rootNode).toBe(chain.volumes[0].nodeName);
  });

  test('a cancel in ready concludes without error and without pivot', async () => {
    const vmId = await fx.newVm();
    await commit(vmId, 'd0v2', 'd0v1');
    await untilJob(vmId, (j) => j?.status === 'ready');
    await driver.cancelJob(vmId, 'j1');
    const done = await untilJob(vmId, (j) => j?.status === 'concluded');
    expect(done?.error).toBeUndefined();
    expect(names(await driver.readChain(vmId, 'disk0'))).toEqual(['d0v2', 'd0v1', 'd0v0']);
  });

  test('a cancel while running concludes with an error, chain unchanged; pivot before ready is refused', async () => {
    const vmId = await fx.newVm();
    await commit(vmId, 'd0v1', 'd0v0', { speed: SLOW, backingFile: 'd0v0.qcow2' });
    expect((await job(vmId))?.status).toBe('running');
    await expect(driver.completeJob(vmId, 'j1')).rejects.toBeInstanceOf(fx.refused);
    await driver.cancelJob(vmId, 'j1');
    const done = await untilJob(vmId, (j) => j?.status === 'concluded');
    expect(done?.error).toMatch(/cancel/i);
    expect(names(await driver.readChain(vmId, 'disk0'))).toEqual(['d0v2', 'd0v1', 'd0v0']);
    await expect(driver.cancelJob(vmId, 'j1')).rejects.toBeInstanceOf(fx.refused);
    await expect(driver.completeJob(vmId, 'nope')).rejects.toBeInstanceOf(fx.refused);
  });

  test('one job per disk: a second commit on a busy disk and a duplicate job id are refused', async () => {
    const vmId = await fx.newVm();
    await commit(vmId, 'd0v1', 'd0v0', { speed: SLOW, backingFile: 'd0v0.qcow2' });
    await expect(commit(vmId, 'd0v2', 'd0v1', { jobId: 'j2' })).rejects.toBeInstanceOf(fx.refused);
    const other = await driver.readChain(vmId, 'disk1');
    await expect(
      driver.startCommit(vmId, {
        jobId: 'j1',
        deviceNode: other.rootNode,
        topNode: nodeOf(other, 'd1v1'),
        baseNode: nodeOf(other, 'd1v0'),
        speed: 0,
      }),
    ).rejects.toBeInstanceOf(fx.refused);
    await expect(commit(vmId, 'd0v2', 'd0v1', { jobId: 'j3', backingFile: 'x.qcow2' })).rejects.toBeInstanceOf(
      fx.refused,
    );
    // setSpeed lifts the limit: the job finishes.
    await driver.setSpeed(vmId, 'j1', 0);
    expect((await untilJob(vmId, (j) => j?.status === 'concluded'))?.error).toBeUndefined();
  });

  test('the removed top stays open until released: after the job is dismissed, and never while in a chain', async () => {
    const vmId = await fx.newVm();
    const before = await driver.readChain(vmId, 'disk0');
    const topPath = before.volumes[1].path;
    await commit(vmId, 'd0v1', 'd0v0', { backingFile: 'd0v0.qcow2' });
    await untilJob(vmId, (j) => j?.status === 'concluded');
    const held = await driver.nodesHolding(vmId, topPath);
    // QEMU: the format node, then the file node; libvirt has let go of the layer itself.
    expect(held).toHaveLength(fx.keepsRemovedNodes ? 2 : 0);
    if (fx.keepsRemovedNodes) expect(held[0]).toBe(nodeOf(before, 'd0v1'));
    // A volume still in a chain is never released.
    await expect(driver.releaseVolume(vmId, before.volumes[2].path)).rejects.toThrow();
    await driver.dismissJob(vmId, 'j1');
    await driver.releaseVolume(vmId, topPath);
    expect(await driver.nodesHolding(vmId, topPath)).toEqual([]);
    expect(names(await driver.readChain(vmId, 'disk0'))).toEqual(['d0v2', 'd0v0']);
    await driver.flushNode(vmId, nodeOf(before, 'd0v0'));
  });

  test('the VM hypervisor pids are the processes allowed to hold its volumes', async () => {
    const vmId = await fx.newVm();
    const pids = await driver.hypervisorPids(vmId);
    for (const pid of pids) expect(existsSync(`/proc/${pid}`)).toBe(true);
    // Real QEMU has one process; the simulation none.
    expect(pids).toHaveLength(driver instanceof SimDriver ? 0 : 1);
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

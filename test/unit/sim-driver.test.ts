import { SimDriver, type SimDriverOptions } from '../../lab/sim/sim-driver';
import type { BlockJob, StartCommit } from '../../src/drivers/driver';
import { DiskNotFoundError, VmGoneError, VmNotFoundError } from '../../src/drivers/errors';
import { QmpCommandError } from '../../src/drivers/qmp/errors';

const MiB = 1024 * 1024;
const [A, B, C] = ['/s/images/d1/a.qcow2', '/s/images/d1/b.qcow2', '/s/images/d1/c.qcow2'];

let driver: SimDriver;
afterEach(async () => driver.close());

/** A VM `vm1` with disk `d1`: a (active) -> b -> c (base), and disk `d2` with one volume. */
function setUp(opts: SimDriverOptions = {}): SimDriver {
  driver = new SimDriver(opts);
  driver.addVm('vm1', [
    { diskId: 'd1', volumes: [A, B, C], sizeBytes: 16 * MiB },
    { diskId: 'd2', volumes: ['/s/images/d2/x.qcow2'] },
  ]);
  return driver;
}

async function commit(top: string, base: string, extra: Partial<StartCommit> = {}): Promise<void> {
  const chain = await driver.readChain('vm1', 'd1');
  const node = (p: string): string => chain.volumes.find((v) => v.path === p)?.nodeName ?? '';
  await driver.startCommit('vm1', {
    jobId: 'j1',
    deviceNode: chain.rootNode,
    topNode: node(top),
    baseNode: node(base),
    speed: 0,
    ...extra,
  });
}

async function job(id = 'j1'): Promise<BlockJob | undefined> {
  return (await driver.listJobs('vm1')).find((j) => j.id === id);
}

/** Waits (on job events, bounded) until the job satisfies `ok`. */
async function untilJob(
  ok: (j: BlockJob | undefined) => boolean,
  id = 'j1',
  timeoutMs = 3000,
): Promise<BlockJob | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = await job(id);
    if (ok(j)) return j;
    if (Date.now() > deadline) throw new Error(`job ${id} never matched; last ${JSON.stringify(j)}`);
    await driver.nextJobChange('vm1', 50);
  }
}

const paths = async (diskId = 'd1'): Promise<string[]> =>
  (await driver.readChain('vm1', diskId)).volumes.map((v) => v.path);

describe('SimDriver', () => {
  test('reads chains with one node name per volume, root first', async () => {
    setUp();
    const chain = await driver.readChain('vm1', 'd1');
    expect(chain.volumes.map((v) => v.path)).toEqual([A, B, C]);
    expect(chain.rootNode).toBe(chain.volumes[0].nodeName);
    expect(new Set(chain.volumes.map((v) => v.nodeName)).size).toBe(3);
    expect((await driver.readAllChains('vm1')).map((c) => c.diskId)).toEqual(['d1', 'd2']);
    expect(await driver.nodesHolding('vm1', B)).toEqual([chain.volumes[1].nodeName, expect.stringMatching(/file/)]);
  });

  test('unknown VM, unknown disk and a VM that is gone throw the host errors', async () => {
    setUp();
    await expect(driver.readChain('nope', 'd1')).rejects.toBeInstanceOf(VmNotFoundError);
    await expect(driver.readChain('vm1', 'nope')).rejects.toBeInstanceOf(DiskNotFoundError);
    driver.removeVm('vm1');
    await expect(driver.listJobs('vm1')).rejects.toBeInstanceOf(VmGoneError);
    await expect(driver.readAllChains('vm1')).rejects.toBeInstanceOf(VmGoneError);
    await expect(driver.nextJobChange('vm1', 10)).rejects.toBeInstanceOf(VmGoneError);
  });

  test('an intermediate commit concludes by itself, drops the top, and stays until dismissed', async () => {
    setUp();
    await commit(B, C, { backingFile: 'c.qcow2' });
    const done = await untilJob((j) => j?.status === 'concluded');
    expect(done).toMatchObject({ type: 'commit', offset: 16 * MiB, len: 16 * MiB });
    expect(done?.error).toBeUndefined();
    expect(await paths()).toEqual([A, C]);
    await new Promise((r) => setTimeout(r, 20));
    expect(await job()).toMatchObject({ status: 'concluded' });
    await driver.dismissJob('vm1', 'j1');
    expect(await driver.listJobs('vm1')).toEqual([]);
    await driver.dismissJob('vm1', 'j1'); // a missing job: no-op, as through QmpDriver
  });

  test('removed nodes stay open until deleted, format node before file node', async () => {
    setUp();
    await commit(B, C);
    await untilJob((j) => j?.status === 'concluded');
    const [format, file] = await driver.nodesHolding('vm1', B);
    expect(format).toMatch(/fmt/);
    await expect(driver.deleteNode('vm1', file)).rejects.toThrow(/in use/);
    await expect(driver.deleteNode('vm1', (await driver.readChain('vm1', 'd1')).rootNode)).rejects.toThrow(/in use/);
    await driver.deleteNode('vm1', format);
    await driver.deleteNode('vm1', file);
    expect(await driver.nodesHolding('vm1', B)).toEqual([]);
    await expect(driver.deleteNode('vm1', file)).rejects.toThrow(/Failed to find node/);
  });

  test('an active commit waits in ready; completing it pivots the device onto the base', async () => {
    setUp();
    await commit(A, B);
    const ready = await untilJob((j) => j?.status === 'ready');
    expect(ready?.offset).toBe(ready?.len);
    await new Promise((r) => setTimeout(r, 20));
    expect(await job()).toMatchObject({ status: 'ready' });
    expect(await paths()).toEqual([A, B, C]);
    await driver.completeJob('vm1', 'j1');
    await expect(driver.completeJob('vm1', 'j1')).rejects.toThrow(/cannot accept command verb 'complete'/);
    const done = await untilJob((j) => j?.status === 'concluded');
    expect(done?.error).toBeUndefined();
    const chain = await driver.readChain('vm1', 'd1');
    expect(chain.volumes.map((v) => v.path)).toEqual([B, C]);
    expect(chain.rootNode).toBe(chain.volumes[0].nodeName);
  });

  test('completing a job that is not ready is refused', async () => {
    setUp({ bytesPerSecond: MiB });
    await commit(A, B);
    await expect(driver.completeJob('vm1', 'j1')).rejects.toBeInstanceOf(QmpCommandError);
    await expect(driver.completeJob('vm1', 'nope')).rejects.toThrow(/not found/);
  });

  test('a cancel in ready concludes without pivot and without error', async () => {
    setUp();
    await commit(A, B);
    await untilJob((j) => j?.status === 'ready');
    await driver.cancelJob('vm1', 'j1');
    const done = await untilJob((j) => j?.status === 'concluded');
    expect(done?.error).toBeUndefined();
    expect(await paths()).toEqual([A, B, C]);
  });

  test('a cancel while running concludes with "Operation canceled", chain unchanged', async () => {
    setUp({ bytesPerSecond: MiB });
    await commit(B, C);
    await driver.cancelJob('vm1', 'j1');
    const done = await untilJob((j) => j?.status === 'concluded');
    expect(done?.error).toBe('Operation canceled');
    expect(done?.offset).toBeLessThan(16 * MiB);
    expect(await paths()).toEqual([A, B, C]);
    await expect(driver.cancelJob('vm1', 'j1')).rejects.toThrow(/state 'concluded'/);
  });

  test('refuses a second job on a disk, a duplicate job id, and backing-file on an active commit', async () => {
    setUp({ bytesPerSecond: MiB });
    await commit(B, C);
    await expect(commit(A, B, { jobId: 'j2' })).rejects.toThrow(/is busy/);
    const other = await driver.readChain('vm1', 'd2');
    const onD2 = { deviceNode: other.rootNode, topNode: other.rootNode, baseNode: other.rootNode, speed: 0 };
    await expect(driver.startCommit('vm1', { ...onD2, jobId: 'j1' })).rejects.toThrow(/already in use/);
    driver.failJob('vm1', 'j1', 'boom');
    await expect(commit(B, C)).rejects.toThrow(/already in use/); // concluded, not dismissed
    await expect(commit(A, B, { jobId: 'j3', backingFile: 'b.qcow2' })).rejects.toThrow(/active layer/);
    await expect(commit(C, B, { jobId: 'j4' })).rejects.toThrow(/not a backing image/);
    expect((await driver.listJobs('vm1')).map((j) => j.id)).toEqual(['j1']);
  });

  test('progress follows real time at the job rate; setSpeed changes it', async () => {
    setUp({ bytesPerSecond: 100 * MiB });
    await commit(B, C, { speed: 10 * MiB });
    await new Promise((r) => setTimeout(r, 200));
    const slow = (await job())?.offset ?? 0;
    expect(slow).toBeGreaterThan(MiB);
    expect(slow).toBeLessThan(16 * MiB);
    expect((await job())?.status).toBe('running');
    await driver.setSpeed('vm1', 'j1', 0); // unlimited: the host's 100 MiB/s
    const done = await untilJob((j) => j?.status === 'concluded', 'j1', 1000);
    expect(done?.offset).toBe(16 * MiB);
    await expect(driver.setSpeed('vm1', 'nope', 1)).rejects.toThrow(/not found/);
  });

  test('timeScale runs simulated time faster: a 10-minute job ends in a fraction of it', async () => {
    setUp({ bytesPerSecond: MiB, timeScale: 200 }); // 16 MiB at 1 MiB/s: 16 simulated s, 80 real ms
    const t = Date.now();
    await commit(B, C);
    const done = await untilJob((j) => j?.status === 'concluded', 'j1', 2000);
    expect(done?.offset).toBe(16 * MiB);
    expect(Date.now() - t).toBeLessThan(1500);
    expect(() => new SimDriver({ timeScale: 0 })).toThrow(RangeError);
  });

  test('nextJobChange resolves on a status change, or after the timeout', async () => {
    setUp({ bytesPerSecond: MiB });
    let t = Date.now();
    await driver.nextJobChange('vm1', 60);
    expect(Date.now() - t).toBeGreaterThanOrEqual(50);
    await commit(B, C);
    t = Date.now();
    const change = driver.nextJobChange('vm1', 5000);
    driver.failJob('vm1', 'j1', 'Input/output error');
    await change;
    expect(Date.now() - t).toBeLessThan(1000);
    expect(await job()).toMatchObject({ status: 'concluded', error: 'Input/output error' });
  });

  test('fault injection: job errors and vanished jobs, the same for the same seed', async () => {
    // Each driver rolls its faults from its own seeded PRNG, one roll sequence per started job.
    const run = async (seed: number): Promise<string[]> => {
      const d = new SimDriver({ seed, faults: { jobErrorRate: 0.3, vanishRate: 0.3 } });
      const seen: string[] = [];
      for (let i = 0; i < 12; i++) {
        const vm = `vm${i}`;
        d.addVm(vm, [{ diskId: 'd1', volumes: [A, B, C] }]);
        const chain = await d.readChain(vm, 'd1');
        const [, b, c] = chain.volumes.map((v) => v.nodeName);
        await d.startCommit(vm, { jobId: 'j', deviceNode: chain.rootNode, topNode: b, baseNode: c, speed: 0 });
        for (;;) {
          const j = (await d.listJobs(vm))[0];
          if (!j || j.status === 'concluded') {
            seen.push(!j ? 'vanished' : (j.error ?? 'ok'));
            break;
          }
          await d.nextJobChange(vm, 50);
        }
      }
      await d.close();
      return seen;
    };
    driver = new SimDriver();
    const first = await run(7);
    expect(await run(7)).toEqual(first);
    expect(first).toEqual(expect.arrayContaining(['ok', 'Input/output error', 'vanished']));
  });

  test('slowHostMs delays every call', async () => {
    setUp({ faults: { slowHostMs: 40 } });
    const t = Date.now();
    await driver.listJobs('vm1');
    await driver.readAllChains('vm1');
    expect(Date.now() - t).toBeGreaterThanOrEqual(70);
  });

  test('close wakes waiters, stops jobs, and later calls throw', async () => {
    setUp({ bytesPerSecond: MiB });
    await commit(B, C);
    const waiting = driver.nextJobChange('vm1', 60_000);
    await driver.close();
    await waiting;
    await expect(driver.listJobs('vm1')).rejects.toThrow(/closed/);
  });
});

/**
 * The offline steps' decisions, called directly on real qcow2 files: disk d1 of vm1,
 * v2 (active) -> v1 -> v0 under a temporary root, each layer with data of its own. The VM does
 * not run (a SimDriver without it: a caller-held definition), or, where a test says so, its
 * definition is kept by the hypervisor (a driver that answers from a variable) or it runs.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import { SimDriver } from '../../lab/sim/sim-driver';
import { imageCommitPid } from '../../lab/vm/processes';
import type { HostActivities } from '../../src/activities';
import { imageDir, volumePath } from '../../src/domain/layout';
import type { HypervisorDriver, VmState } from '../../src/drivers/driver';
import { readHeaderChain } from '../../src/storage/header-chain';
import { ImageToolError } from '../../src/storage/image-commit';
import { isBackingOf } from '../../src/storage/qemu-img';
import { recordFixedSpeed } from '../../src/storage/speed-record';
import { writeTombstone } from '../../src/storage/tombstone';
import { VolumeUsage } from '../../src/volume-users';
import { failureOf } from '../harness/failure';
import { hostSteps } from '../harness/host-steps';
import { writeUnreadableImage } from '../harness/unreadable-image';
import { until } from '../harness/until';

jest.setTimeout(30_000);
const run = promisify(execFile);

let root: string;
let usage: VolumeUsage;
const sims: SimDriver[] = [];

const vol = (id: string): string => volumePath(root, 'd1', id);
const env = (): MockActivityEnvironment => new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') });
const step = (top: string, base: string) => ({ vmId: 'vm1', diskId: 'd1', topVolumeId: top, baseVolumeId: base });
const refusal = (p: Promise<unknown>): Promise<ApplicationFailure> => failureOf(p, 'expected a refusal');
/** True when `image` reads `pattern` (a byte) at `offset`, through its chain. */
const reads = async (image: string, pattern: number, offset: string, len = '64k'): Promise<boolean> =>
  run('qemu-io', ['-r', '-f', 'qcow2', '-c', `read -P ${pattern} ${offset} ${len}`, image]).then(
    (r) => !/Pattern verification failed/.test(r.stdout),
    () => false,
  );

/** Sets qcow2's "corrupt" bit: QEMU then refuses to open the image for writing. */
async function markCorrupt(image: string): Promise<void> {
  const handle = await fs.open(image, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, 79);
    await handle.write(Buffer.from([byte[0] | 0x02]), 0, 1, 79);
  } finally {
    await handle.close();
  }
}

/** No VM runs: the SimDriver does not know vm1 (its definition is the caller's). */
function stopped(): SimDriver {
  const sim = new SimDriver({ seed: 1 });
  sims.push(sim);
  return sim;
}

/** vm1 runs on the SimDriver (its chain as the files have it). */
function running(): SimDriver {
  const sim = stopped();
  sim.addVm('vm1', [{ diskId: 'd1', volumes: [vol('v2'), vol('v1'), vol('v0')] }]);
  return sim;
}

/** A shut-off domain whose definition the hypervisor keeps: it starts from `defined.active`. */
function definedBy(defined: { active: string; redefined: string[] }): HypervisorDriver {
  const sim = stopped();
  return Object.assign(Object.create(sim) as SimDriver, {
    vmState: async (): Promise<VmState> => ({ running: false, definition: 'hypervisor' }),
    definedActive: async () => defined.active,
    redefineActive: async (_vm: string, _disk: string, from: string, to: string) => {
      defined.redefined.push(`${path.basename(from)}->${path.basename(to)}`);
      defined.active = to;
    },
  });
}

const steps = (driver: HypervisorDriver): HostActivities => hostSteps(root, driver, usage);

/** The three images, made once: each test starts from a copy (qemu-img and qemu-io take tens of ms a call). */
let template: string;
beforeAll(async () => {
  template = await fs.mkdtemp(path.join(tmpdir(), 'lm-offline-template-'));
  const at = (id: string): string => path.join(template, `${id}.qcow2`);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', at('v0'), '4M']);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v0.qcow2', '-F', 'qcow2', at('v1')]);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v1.qcow2', '-F', 'qcow2', at('v2')]);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 1M', at('v0')]);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x22 0 512k', at('v1')]);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 1M 512k', at('v2')]);
});
afterAll(async () => {
  if (template) await fs.rm(template, { recursive: true, force: true });
});

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(tmpdir(), 'lm-offline-'));
  await fs.cp(template, imageDir(root, 'd1'), { recursive: true });
  usage = new VolumeUsage(root);
});

afterEach(async () => {
  usage.close();
  for (const sim of sims.splice(0)) await sim.close();
  await fs.rm(root, { recursive: true, force: true });
});

describe('the merge step', () => {
  test('a VM that does not run: offline, with the kind, the chain and who keeps the definition', async () => {
    const s = steps(stopped());
    const merge = (top: string, base: string) =>
      env().run(s.merge, { ...step(top, base), bandwidthBytesPerSec: 0, allowOffline: true as const });
    expect(await merge('v1', 'v0')).toEqual({
      outcome: 'offline',
      jobId: 'lm.d1.v1',
      kind: 'intermediate',
      chain: ['v2', 'v1', 'v0'],
      definition: 'caller',
    });
    expect(await merge('v2', 'v1')).toMatchObject({ outcome: 'offline', kind: 'active' });
    expect(await refusal(merge('v2', 'v0'))).toMatchObject({ type: 'BaseNotBacking' });
  });

  test('without allowOffline (a merge recorded before the offline path) the stopped VM is VmNotFound', async () => {
    const f = await refusal(env().run(steps(stopped()).merge, { ...step('v1', 'v0'), bandwidthBytesPerSec: 0 }));
    expect(f).toMatchObject({ type: 'VmNotFound' });
  });

  test('a running VM with allowOffline: the live path (a block job starts)', async () => {
    const sim = running();
    const started = await env().run(steps(sim).merge, {
      ...step('v1', 'v0'),
      bandwidthBytesPerSec: 0,
      allowOffline: true as const,
    });
    expect(started).toMatchObject({ outcome: 'started', kind: 'intermediate' });
  });

  test('a hypervisor-kept definition: the chain below the volume it names', async () => {
    const defined = { active: vol('v1'), redefined: [] };
    const started = await env().run(steps(definedBy(defined)).merge, {
      ...step('v1', 'v0'),
      bandwidthBytesPerSec: 0,
      allowOffline: true as const,
    });
    expect(started).toEqual({
      outcome: 'offline',
      jobId: 'lm.d1.v1',
      kind: 'active',
      chain: ['v1', 'v0'],
      definition: 'hypervisor',
    });
  });

  test('images that branch above the base: the volume the VM starts from cannot be told, ChainBranches', async () => {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v1.qcow2', '-F', 'qcow2', vol('x')]);
    const f = await refusal(
      env().run(steps(stopped()).merge, { ...step('v1', 'v0'), bandwidthBytesPerSec: 0, allowOffline: true as const }),
    );
    expect(f).toMatchObject({ type: 'ChainBranches', nonRetryable: true });
    expect(f.message).toMatch(
      /v1 is the backing of .*v2\.qcow2, .*x\.qcow2|v1 is the backing of .*x\.qcow2, .*v2\.qcow2/,
    );
  });

  test('overlays above the base that make a loop: ChainBranches, nothing touched', async () => {
    await run('qemu-img', ['rebase', '-q', '-u', '-f', 'qcow2', '-b', 'v2.qcow2', '-F', 'qcow2', vol('v0')]);
    const f = await refusal(
      env().run(steps(stopped()).merge, { ...step('v1', 'v0'), bandwidthBytesPerSec: 0, allowOffline: true as const }),
    );
    expect(f).toMatchObject({ type: 'ChainBranches' });
    expect(f.message).toBe('the overlays above v0 on disk d1 make a loop');
  });

  test("the one image above a layer in another disk's directory: ChainBranches, not followed there", async () => {
    await fs.rm(vol('v2'));
    const x = volumePath(root, 'other', 'x');
    await fs.mkdir(path.dirname(x), { recursive: true });
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', vol('v1'), '-F', 'qcow2', x]);
    const f = await refusal(
      env().run(steps(stopped()).merge, { ...step('v1', 'v0'), bandwidthBytesPerSec: 0, allowOffline: true as const }),
    );
    expect(f).toMatchObject({ type: 'ChainBranches' });
    expect(f.message).toBe(`the VM's volume on disk d1 cannot be told: v1 is the backing of ${x}; nothing was touched`);
  });

  test('a top committed, relinked and deleted earlier (its tombstone): offline with no kind', async () => {
    await run('qemu-img', ['rebase', '-q', '-u', '-f', 'qcow2', '-b', 'v0.qcow2', '-F', 'qcow2', vol('v2')]);
    await fs.rm(vol('v1'));
    await writeTombstone(root, 'd1', { volumeId: 'v1', mergedInto: 'v0', deletedAt: new Date().toISOString() });
    const started = await env().run(steps(stopped()).merge, {
      ...step('v1', 'v0'),
      bandwidthBytesPerSec: 0,
      allowOffline: true as const,
    });
    expect(started).toEqual({ outcome: 'offline', jobId: 'lm.d1.v1', chain: ['v2', 'v0'], definition: 'caller' });
  });
});

describe('offlineCommit', () => {
  const commit = (driver: HypervisorDriver, kind: 'active' | 'intermediate', top = 'v1', base = 'v0') =>
    env().run(steps(driver).offlineCommit, { ...step(top, base), kind, bandwidthBytesPerSec: 0 } as const);

  test('commits the top into the base and keeps the top: the base reads the top data, the chain still reads right', async () => {
    expect(await reads(vol('v0'), 0x22, '0')).toBe(false);
    const done = (await commit(stopped(), 'intermediate')) as { committed: boolean; bytes: number };
    expect(done.committed).toBe(true);
    expect(done.bytes).toBeGreaterThanOrEqual(512 * 1024);
    expect(await reads(vol('v0'), 0x22, '0')).toBe(true);
    expect(await reads(vol('v0'), 0x11, '512k')).toBe(true);
    expect(await reads(vol('v1'), 0x22, '0')).toBe(true);
    expect(await reads(vol('v2'), 0x33, '1M')).toBe(true);
  });

  test('a VM that runs: VmStarted, nothing written', async () => {
    const f = await refusal(commit(running(), 'intermediate'));
    expect(f).toMatchObject({ type: 'VmStarted', nonRetryable: true });
    expect(f.message).toBe(
      'VM vm1 started during the offline merge: the commit of v1 refused and changed nothing; the top is kept and the chain readable',
    );
    expect(await reads(vol('v0'), 0x22, '0')).toBe(false);
  });

  test('the kind the merge decided no longer holds: ChainChanged, nothing written', async () => {
    const f = await refusal(commit(stopped(), 'active'));
    expect(f).toMatchObject({ type: 'ChainChanged' });
    expect(f.message).toMatch(/now takes an intermediate commit, not the active one/);
    expect(await reads(vol('v0'), 0x22, '0')).toBe(false);
  });

  test('a top merged into the base already (its tombstone): nothing committed again', async () => {
    await run('qemu-img', ['rebase', '-q', '-u', '-f', 'qcow2', '-b', 'v0.qcow2', '-F', 'qcow2', vol('v2')]);
    await fs.rm(vol('v1'));
    await writeTombstone(root, 'd1', { volumeId: 'v1', mergedInto: 'v0', deletedAt: new Date().toISOString() });
    expect(await commit(stopped(), 'intermediate')).toEqual({ committed: false, bytes: 0 });
  });

  const SMALL_PREFIX = 'lm-offline-small-';
  /**
   * The small file systems of runs that were killed before their `finally` (a mutation run's
   * timeout kills its worker): unmounted and removed, those of live processes left alone.
   */
  async function sweepSmallMounts(): Promise<void> {
    const mounts = (await fs.readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' ')[1] ?? '');
    for (const dir of mounts.filter((m) => path.basename(m).startsWith(SMALL_PREFIX))) {
      const pid = Number(path.basename(dir).slice(SMALL_PREFIX.length).split('-')[0]);
      if (pid > 0 && existsSync(`/proc/${pid}`)) continue;
      await run('umount', [dir]).catch(() => undefined);
      await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  test('a base file system without room for the commit and its margin: InsufficientSpace with its figures, nothing written', async () => {
    // 64 MiB of tmpfs cannot hold the 64 MiB margin on top of what the commit can add.
    await sweepSmallMounts();
    const small = await fs.mkdtemp(path.join(tmpdir(), `${SMALL_PREFIX}${process.pid}-`));
    await run('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', small]);
    const smallUsage = new VolumeUsage(small);
    try {
      await fs.cp(template, imageDir(small, 'd1'), { recursive: true });
      const f = await refusal(
        env().run(hostSteps(small, stopped(), smallUsage).offlineCommit, {
          ...step('v1', 'v0'),
          kind: 'intermediate' as const,
          bandwidthBytesPerSec: 0,
        }),
      );
      expect(f).toMatchObject({ type: 'InsufficientSpace', nonRetryable: true });
      expect(f.message).toMatch(
        new RegExp(
          `^not enough space to commit v1 into v0 on disk d1: needs \\d+ bytes \\(\\d+ the commit can add to the base, for \\d+ bytes allocated in the top, plus a margin of \\d+\\), \\d+ bytes free in ${imageDir(small, 'd1')}; nothing was written$`,
        ),
      );
      expect(await reads(volumePath(small, 'd1', 'v0'), 0x22, '0')).toBe(false);
    } finally {
      smallUsage.close();
      await run('umount', [small]);
      await fs.rm(small, { recursive: true, force: true });
    }
  });

  test('another image names the base: BaseShared, nothing written', async () => {
    await fs.mkdir(imageDir(root, 'other'), { recursive: true });
    await run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      vol('v0'),
      '-F',
      'qcow2',
      volumePath(root, 'other', 'x'),
    ]);
    const f = await refusal(commit(definedBy({ active: vol('v2'), redefined: [] }), 'intermediate'));
    expect(f).toMatchObject({ type: 'BaseShared' });
    expect(f.message).toMatch(/x\.qcow2/);
    // A caller-held definition: the base's two overlays leave the VM's volume unknown first.
    expect(await refusal(commit(stopped(), 'intermediate'))).toMatchObject({ type: 'ChainBranches' });
    expect(await reads(vol('v0'), 0x22, '0')).toBe(false);
  });
});

describe('qemu-img failing on its own', () => {
  test('a commit qemu-img refuses (a top marked corrupt): ImageCommitFailed with its error, the top kept', async () => {
    await markCorrupt(vol('v1'));
    const f = await refusal(
      env().run(steps(stopped()).offlineCommit, {
        ...step('v1', 'v0'),
        kind: 'intermediate' as const,
        bandwidthBytesPerSec: 0,
      }),
    );
    expect(f).toMatchObject({ type: 'ImageCommitFailed', nonRetryable: true });
    expect(f.message).toMatch(
      /commit of v1 into v0 on disk d1 failed: qemu-img commit .*\(exit 1\): .*corrupt.*; top volume v1 kept/,
    );
    expect(await reads(vol('v1'), 0x22, '0')).toBe(true);
  });

  test('a rebase qemu-img refuses (the layer above marked corrupt): ImageCommitFailed, the layer above unchanged', async () => {
    await markCorrupt(vol('v2'));
    const f = await refusal(
      env().run(steps(stopped()).offlineRelink, { ...step('v1', 'v0'), kind: 'intermediate' as const }),
    );
    expect(f).toMatchObject({ type: 'ImageCommitFailed' });
    expect(f.message).toMatch(/relink of d1 past v1 on disk d1 failed: qemu-img rebase/);
    expect(await isBackingOf(vol('v2'), vol('v1'))).toBe(true);
  });
});

describe('qemu-img killed by a signal that is no cancel', () => {
  test('the commit fails with the tool error, retried (not ImageCommitFailed), the top kept', async () => {
    const commit = env().run(steps(stopped()).offlineCommit, {
      ...step('v1', 'v0'),
      kind: 'intermediate' as const,
      bandwidthBytesPerSec: 64 * 1024,
    });
    const outcome = commit.catch((e: unknown) => e);
    process.kill(await until(() => imageCommitPid(vol('v1'))), 'SIGKILL');
    const err = await outcome;
    expect(err).toBeInstanceOf(ImageToolError);
    expect((err as ImageToolError).code).toBeNull();
    expect(await reads(vol('v1'), 0x22, '0')).toBe(true);
  });
});

describe('offlineRelink', () => {
  const relink = (driver: HypervisorDriver, kind: 'active' | 'intermediate', top = 'v1', base = 'v0') =>
    env().run(steps(driver).offlineRelink, { ...step(top, base), kind } as const);

  test('intermediate: the layer above is rebased onto the base by a relative name; a second run changes nothing', async () => {
    await commit0();
    expect(await relink(stopped(), 'intermediate')).toEqual({ relinked: 'layerAbove', changed: true });
    expect(await isBackingOf(vol('v2'), vol('v0'))).toBe(true);
    expect(await readHeaderChain(vol('v2'))).toEqual([vol('v2'), vol('v0')]);
    expect(await reads(vol('v2'), 0x22, '0')).toBe(true);
    expect(await reads(vol('v2'), 0x33, '1M')).toBe(true);
    expect(await relink(stopped(), 'intermediate')).toEqual({ relinked: 'layerAbove', changed: false });
  });

  test('a VM that runs: VmStarted, the layer above unchanged', async () => {
    const f = await refusal(relink(running(), 'intermediate'));
    expect(f).toMatchObject({ type: 'VmStarted' });
    expect(await isBackingOf(vol('v2'), vol('v1'))).toBe(true);
  });

  test('two images above the top: ChainChanged, nothing rebased', async () => {
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v1.qcow2', '-F', 'qcow2', vol('x')]);
    const f = await refusal(relink(stopped(), 'intermediate'));
    expect(f).toMatchObject({ type: 'ChainChanged' });
    expect(await isBackingOf(vol('v2'), vol('v1'))).toBe(true);
    expect(await isBackingOf(vol('x'), vol('v1'))).toBe(true);
  });

  test('active, caller-held: nothing to change here, the result tells the caller', async () => {
    expect(await relink(stopped(), 'active', 'v2', 'v1')).toEqual({ relinked: 'caller', changed: false });
    expect(await isBackingOf(vol('v2'), vol('v1'))).toBe(true);
  });

  test('active, hypervisor-kept: the definition moves from the top to the base, once', async () => {
    const defined = { active: vol('v2'), redefined: [] as string[] };
    const driver = definedBy(defined);
    expect(await relink(driver, 'active', 'v2', 'v1')).toEqual({ relinked: 'definition', changed: true });
    expect(defined.redefined).toEqual(['v2.qcow2->v1.qcow2']);
    expect(await relink(driver, 'active', 'v2', 'v1')).toEqual({ relinked: 'definition', changed: false });
    expect(defined.redefined).toHaveLength(1);
  });

  test('active, a definition that names neither the top nor the base: ChainChanged, not redefined', async () => {
    const defined = { active: vol('v0'), redefined: [] as string[] };
    const f = await refusal(relink(definedBy(defined), 'active', 'v2', 'v1'));
    expect(f).toMatchObject({ type: 'ChainChanged' });
    expect(f.message).toBe(
      `disk d1: the VM's definition starts from ${vol('v0')}, neither the top nor the base; nothing was changed`,
    );
    expect(defined.redefined).toEqual([]);
  });

  test('a redefine that fails: VmStarted when the domain now runs, else its own error', async () => {
    const sim = stopped();
    let running = false;
    const failing = Object.assign(Object.create(sim) as SimDriver, {
      vmState: async (): Promise<VmState> =>
        running ? { running: true } : { running: false, definition: 'hypervisor' },
      definedActive: async () => vol('v2'),
      redefineActive: async () => {
        throw new Error('virsh define: domain vm1 started from v2 meanwhile');
      },
    });
    await expect(relink(failing, 'active', 'v2', 'v1')).rejects.toThrow(
      'virsh define: domain vm1 started from v2 meanwhile',
    );
    const started = Object.assign(Object.create(failing) as SimDriver, {
      redefineActive: async () => {
        running = true;
        throw new Error('virsh define: domain vm1 started from v2 meanwhile');
      },
    });
    const f = await refusal(relink(started, 'active', 'v2', 'v1'));
    expect(f).toMatchObject({ type: 'VmStarted' });
    expect(f.message).toMatch(/^VM vm1 started during the offline merge: the relink of d1 past v2 refused/);
  });

  test('the layer above held by another process (its image locks): VolumeInUse, the layer above unchanged', async () => {
    await commit0();
    // qemu-io keeps v2 open, with QEMU's write locks, while its stdin stays open.
    const holder = spawn('qemu-io', ['-f', 'qcow2', vol('v2')], { stdio: ['pipe', 'ignore', 'ignore'] });
    try {
      await until(async () =>
        (await fs.readFile('/proc/locks', 'utf8')).includes(`:${(await fs.stat(vol('v2'))).ino} `),
      );
      const f = await refusal(relink(stopped(), 'intermediate'));
      expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
      expect(f.message).toMatch(
        /^the relink of d1 past v1 on disk d1 found an image locked by another process: qemu-img rebase .*Failed to get "write" lock.*; nothing was written$/s,
      );
      expect(await isBackingOf(vol('v2'), vol('v1'))).toBe(true);
    } finally {
      holder.kill('SIGKILL');
      await new Promise((r) => holder.once('exit', r));
    }
  });
});

describe('what names a layer of the chain a stopped VM opens', () => {
  const merge = () =>
    env().run(steps(stopped()).merge, { ...step('v1', 'v0'), bandwidthBytesPerSec: 0, allowOffline: true as const });
  const commit = () =>
    env().run(steps(stopped()).offlineCommit, {
      ...step('v1', 'v0'),
      kind: 'intermediate' as const,
      bandwidthBytesPerSec: 0,
    });
  let outside: string;
  beforeEach(async () => {
    outside = await fs.mkdtemp(path.join(tmpdir(), 'lm-offline-outside-'));
    await fs.mkdir(imageDir(root, 'other'), { recursive: true });
  });
  afterEach(async () => {
    await fs.rm(outside, { recursive: true, force: true });
  });
  /** other/x.qcow2 backed by `y` outside the root, which is backed by `volume`: x names it through y. */
  async function namedThrough(volume: string): Promise<string> {
    const y = path.join(outside, 'y.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', volume, '-F', 'qcow2', y]);
    const x = volumePath(root, 'other', 'x');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', y, '-F', 'qcow2', x]);
    return x;
  }

  test('an image whose backing name cannot be tied to a file: UnresolvedImageName, nothing touched', async () => {
    const x = volumePath(root, 'other', 'x');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'nbd://h/e', '-F', 'raw', x, '1M']);
    const f = await refusal(merge());
    expect(f).toMatchObject({ type: 'UnresolvedImageName', nonRetryable: true });
    expect(f.message).toMatch(
      new RegExp(
        `^the overlays of v0 on disk d1 cannot be told: ${x} holds a name this host cannot tie to a file, so it may use it: .*nbd://h/e.*; nothing was touched$`,
      ),
    );
  });

  test('a header that cannot be read beside a name that cannot be tied: UnresolvedImageName, both named', async () => {
    const bad = writeUnreadableImage(volumePath(root, 'other', 'bad'));
    const x = volumePath(root, 'other', 'x');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'nbd://h/e', '-F', 'raw', x, '1M']);
    const f = await refusal(merge());
    expect(f).toMatchObject({ type: 'UnresolvedImageName' });
    expect(f.message).toMatch(
      new RegExp(`cannot be told: ${bad} could not be read \\(.*\\), so it may use it; ${x} holds a name`),
    );
  });

  test('an image whose header cannot be read: CorruptImageHeader, nothing touched', async () => {
    const x = writeUnreadableImage(volumePath(root, 'other', 'x'));
    const f = await refusal(merge());
    expect(f).toMatchObject({ type: 'CorruptImageHeader' });
    expect(f.message).toMatch(new RegExp(`^the overlays of v0 on disk d1 cannot be told: ${x} could not be read`));
  });

  test('an image naming the base through a file outside the root is no layer of the chain: the guard refuses it, BaseShared', async () => {
    const x = await namedThrough(vol('v0'));
    expect(await merge()).toMatchObject({ outcome: 'offline', kind: 'intermediate' });
    const f = await refusal(commit());
    expect(f).toMatchObject({ type: 'BaseShared' });
    expect(f.message).toContain(x);
    expect(await reads(vol('v0'), 0x22, '0')).toBe(false);
  });

  test('an image whose data file is the base is no layer of the chain: the guard refuses it, BaseShared', async () => {
    const x = volumePath(root, 'other', 'x');
    await run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      `data_file=${path.join(outside, 'scratch.raw')}`,
      x,
      '4M',
    ]);
    await run('qemu-img', ['amend', '-f', 'qcow2', '-o', `data_file=${vol('v0')}`, x]);
    expect(await merge()).toMatchObject({ outcome: 'offline', kind: 'intermediate' });
    expect(await refusal(commit())).toMatchObject({ type: 'BaseShared' });
  });

  test('the relink finds the top named through another file since its commit: ChainChanged naming both, nothing rebased', async () => {
    await commit();
    const x = await namedThrough(vol('v1'));
    const f = await refusal(
      env().run(steps(stopped()).offlineRelink, { ...step('v1', 'v0'), kind: 'intermediate' as const }),
    );
    expect(f).toMatchObject({ type: 'ChainChanged', nonRetryable: true });
    expect(f.message).toBe(
      `disk d1: v1 is used by more than the layer above since its commit (it is the backing file of ${vol('v2')}; ` +
        `it is the backing file of ${x} (through ${path.join(outside, 'y.qcow2')})); nothing was changed`,
    );
    expect(await isBackingOf(vol('v2'), vol('v1'))).toBe(true);
  });
});

describe('verifyChain and deleteVolume of an offline merge', () => {
  const check = { ...step('v2', 'v1'), offline: true as const };

  test('after an active commit of a caller-held VM: the base is active, the top deleted, nothing asked of QEMU', async () => {
    const s = steps(stopped());
    expect(await env().run(s.verifyChain, check)).toEqual({ chain: ['v1', 'v0'] });
    expect(await env().run(s.deleteVolume, check)).toMatchObject({ deleted: true });
    expect(existsSync(vol('v2'))).toBe(false);
    expect(existsSync(vol('v1'))).toBe(true);
  });

  test('after an intermediate commit: the chain is the layer above on the base', async () => {
    await commit0();
    await env().run(steps(stopped()).offlineRelink, { ...step('v1', 'v0'), kind: 'intermediate' as const });
    const s = steps(stopped());
    const c = { ...step('v1', 'v0'), offline: true as const };
    expect(await env().run(s.verifyChain, c)).toEqual({ chain: ['v2', 'v0'] });
    expect(await env().run(s.deleteVolume, c)).toMatchObject({ deleted: true });
    expect(existsSync(vol('v1'))).toBe(false);
    expect(await reads(vol('v2'), 0x22, '0')).toBe(true);
  });

  test('before the relink: the top still under the layer above, the check fails and the delete refuses', async () => {
    const s = steps(stopped());
    const c = { ...step('v1', 'v0'), offline: true as const };
    expect(await refusal(env().run(s.verifyChain, c))).toMatchObject({ type: 'ChainVerificationFailed' });
    expect(await refusal(env().run(s.deleteVolume, c))).toMatchObject({ type: 'VolumeInUse' });
    expect(existsSync(vol('v1'))).toBe(true);
  });

  test('a VM started from the top meanwhile: its QEMU has the top in the chain, the delete refuses', async () => {
    const s = steps(running());
    expect(await refusal(env().run(s.verifyChain, check))).toMatchObject({ type: 'ChainVerificationFailed' });
    expect(await refusal(env().run(s.deleteVolume, check))).toMatchObject({ type: 'VolumeInUse' });
    expect(existsSync(vol('v2'))).toBe(true);
  });

  test('a hypervisor-kept definition still naming the top: the check fails, nothing deleted', async () => {
    const s = steps(definedBy({ active: vol('v2'), redefined: [] }));
    expect(await refusal(env().run(s.verifyChain, check))).toMatchObject({ type: 'ChainVerificationFailed' });
    expect(await refusal(env().run(s.deleteVolume, check))).toMatchObject({ type: 'VolumeInUse' });
    expect(existsSync(vol('v2'))).toBe(true);
  });
});

/** The intermediate commit of v1 into v0, as offlineCommit runs it. */
async function commit0(): Promise<void> {
  const kind = 'intermediate' as const;
  await env().run(steps(stopped()).offlineCommit, { ...step('v1', 'v0'), kind, bandwidthBytesPerSec: 0 });
}

describe('a VM that stopped mid-merge of an active commit: what the pivot record says', () => {
  const pivotRecord = (record: Record<string, string>): Promise<void> =>
    fs.writeFile(path.join(imageDir(root, 'd1'), '.v2.pivot.json'), JSON.stringify({ topVolumeId: 'v2', ...record }));
  const finish = (s: HostActivities) =>
    env().run(s.merge, {
      ...step('v2', 'v1'),
      bandwidthBytesPerSec: 0,
      allowOffline: true as const,
      offlineOnly: true as const,
    });
  const commit = (s: HostActivities) =>
    env().run(s.offlineCommit, { ...step('v2', 'v1'), kind: 'active' as const, bandwidthBytesPerSec: 0 });

  test('no record: the top holds the newest data and is committed', async () => {
    const s = steps(stopped());
    expect(await finish(s)).toEqual({
      outcome: 'offline',
      jobId: 'lm.d1.v2',
      kind: 'active',
      chain: ['v2', 'v1', 'v0'],
      definition: 'caller',
    });
    expect(await commit(s)).toEqual({ committed: true, bytes: 512 * 1024 });
    expect(await reads(vol('v1'), 0x33, '1M', '512k')).toBe(true);
  });

  test('a confirmed pivot: the base is newest, the stale top is never committed over it', async () => {
    await pivotRecord({ requestedAt: '2026-12-07T09:00:00.000Z', confirmedAt: '2026-12-07T09:00:00.050Z' });
    // The guest wrote to the base after the pivot; the stale top has older data there.
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x44 1M 64k', vol('v1')]);
    const s = steps(stopped());
    expect(await finish(s)).toMatchObject({ outcome: 'offline', kind: 'active', pivoted: true });
    expect(await commit(s)).toEqual({ committed: false, bytes: 0 });
    expect(await reads(vol('v1'), 0x44, '1M')).toBe(true);
    // Taken out of what a caller-held VM opens, and deleted.
    expect(await env().run(s.verifyChain, { ...step('v2', 'v1'), offline: true as const })).toEqual({
      chain: ['v1', 'v0'],
    });
    // A speed an update fixed for the job goes with the top too.
    await recordFixedSpeed(root, 'd1', 'v2', 1024 * 1024);
    expect(await env().run(s.deleteVolume, { ...step('v2', 'v1'), offline: true as const })).toMatchObject({
      deleted: true,
    });
    expect(existsSync(path.join(imageDir(root, 'd1'), '.v2.pivot.json'))).toBe(false);
    expect(existsSync(path.join(imageDir(root, 'd1'), '.v2.speed.json'))).toBe(false);
  });

  test('an unconfirmed request, top and base differ: PivotOutcomeUnknown, both kept, nothing written', async () => {
    await pivotRecord({ requestedAt: '2026-12-07T09:00:00.000Z' });
    const before = await fs.readFile(vol('v1'));
    const s = steps(stopped());
    const f = await refusal(finish(s));
    expect([f.type, f.message]).toEqual([
      'PivotOutcomeUnknown',
      "disk d1: the VM stopped between the pivot request (2026-12-07T09:00:00.000Z) and QEMU's confirmation, and v2 and v1 hold different data: if QEMU pivoted, the guest's newest writes are in v1 (start from it); if not, in v2 (start from it). Which one cannot be told from what QEMU left; both are kept, nothing was written or deleted",
    ]);
    expect(await refusal(commit(s))).toMatchObject({ type: 'PivotOutcomeUnknown' });
    expect((await fs.readFile(vol('v1'))).equals(before)).toBe(true);
    expect(existsSync(vol('v2'))).toBe(true);
  });

  test('an unconfirmed request, top and base read the same: the base, no commit', async () => {
    await pivotRecord({ requestedAt: '2026-12-07T09:00:00.000Z' });
    // What the mirror leaves at the pivot: the base holds everything the top does.
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 1M 512k', vol('v1')]);
    const s = steps(stopped());
    expect(await finish(s)).toMatchObject({ kind: 'active', pivoted: true });
    expect(await commit(s)).toEqual({ committed: false, bytes: 0 });
  });

  test('a record that does not parse is thrown, not read as "no pivot asked for"', async () => {
    await fs.writeFile(path.join(imageDir(root, 'd1'), '.v2.pivot.json'), '{"topVolumeId":');
    await expect(finish(steps(stopped()))).rejects.toThrow(SyntaxError);
    await fs.writeFile(
      path.join(imageDir(root, 'd1'), '.v2.pivot.json'),
      JSON.stringify({ topVolumeId: 'v9', requestedAt: 'x' }),
    );
    await expect(finish(steps(stopped()))).rejects.toThrow(/pivot record .*\.v2\.pivot\.json is of volume v9, not v2/);
  });

  test('an intermediate commit never reads a pivot record', async () => {
    await fs.writeFile(path.join(imageDir(root, 'd1'), '.v1.pivot.json'), 'not json');
    const s = steps(stopped());
    expect(
      await env().run(s.offlineCommit, { ...step('v1', 'v0'), kind: 'intermediate' as const, bandwidthBytesPerSec: 0 }),
    ).toEqual({ committed: true, bytes: 512 * 1024 });
    expect(
      await env().run(s.merge, {
        ...step('v1', 'v0'),
        bandwidthBytesPerSec: 0,
        allowOffline: true as const,
        offlineOnly: true as const,
      }),
    ).toMatchObject({ kind: 'intermediate' });
  });

  test('QEMU finished an intermediate commit, then the VM stopped: from where it ran, the top is merged already', async () => {
    // What the job's end leaves: the top's data in the base, the layer above naming the base; the top still does too.
    await run('qemu-img', ['commit', '-q', '-d', '-f', 'qcow2', vol('v1')]);
    await run('qemu-img', ['rebase', '-q', '-u', '-f', 'qcow2', '-b', 'v0.qcow2', '-F', 'qcow2', vol('v2')]);
    const s = steps(stopped());
    const merge = (liveActive?: string) =>
      env().run(s.merge, {
        ...step('v1', 'v0'),
        bandwidthBytesPerSec: 0,
        allowOffline: true as const,
        offlineOnly: true as const,
        ...(liveActive === undefined ? {} : { liveActive }),
      });
    expect(await merge('v2')).toEqual({
      outcome: 'offline',
      jobId: 'lm.d1.v1',
      chain: ['v2', 'v0'],
      definition: 'caller',
    });
    // Without it, two images above the base: the VM's volume cannot be told.
    expect(await refusal(merge())).toMatchObject({ type: 'ChainBranches' });
    expect(await env().run(s.verifyChain, { ...step('v1', 'v0'), offline: true as const })).toEqual({
      chain: ['v2', 'v0'],
    });
    expect(await env().run(s.deleteVolume, { ...step('v1', 'v0'), offline: true as const })).toMatchObject({
      deleted: true,
    });
    expect(await reads(vol('v2'), 0x22, '0', '512k')).toBe(true);
  });

  test('QEMU stopped mid-way through an intermediate commit: from where it ran, the commit is to do', async () => {
    const s = steps(stopped());
    expect(
      await env().run(s.merge, {
        ...step('v1', 'v0'),
        bandwidthBytesPerSec: 0,
        allowOffline: true as const,
        offlineOnly: true as const,
        liveActive: 'v2',
      }),
    ).toEqual({
      outcome: 'offline',
      jobId: 'lm.d1.v1',
      kind: 'intermediate',
      chain: ['v2', 'v1', 'v0'],
      definition: 'caller',
    });
  });

  test('offlineOnly: a VM that runs again is refused, and nothing is started', async () => {
    const sim = running();
    const f = await refusal(finish(steps(sim)));
    expect([f.type, f.message]).toEqual([
      'VmStarted',
      'VM vm1 stopped mid-merge and runs again: disk d1 is not finished offline; top v2 kept, a new merge of the snapshot runs live',
    ]);
    expect(await sim.listJobs('vm1')).toEqual([]);
  });

  test('a new live job on the top drops the record of an earlier one: the VM runs from the top', async () => {
    await pivotRecord({ requestedAt: '2026-12-07T09:00:00.000Z' });
    const s = steps(running());
    expect(
      await env().run(s.merge, { ...step('v2', 'v1'), bandwidthBytesPerSec: 0, allowOffline: true as const }),
    ).toMatchObject({
      outcome: 'started',
    });
    expect(existsSync(path.join(imageDir(root, 'd1'), '.v2.pivot.json'))).toBe(false);
  });
});

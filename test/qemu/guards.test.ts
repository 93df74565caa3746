/**
 * Every refusal of the host steps, called DIRECTLY with the situation it guards against, on a real
 * paused QEMU lab VM (2 disks: disk<d> is d<d>v2 (active) -> d<d>v1 -> d<d>v0) and real images and
 * processes: not through the workflow, whose earlier steps would stop first. Each refusal names
 * its failure type and what it saw, and leaves every file under the storage root byte-for-byte as
 * it was. Every process a test starts is stopped by its pid in afterEach.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import { createLabVm, destroyLabVm } from '../../lab/vm';
import { createHostActivities, type HostActivities } from '../../src/activities';
import type { HostDeps } from '../../src/activities/deps';
import type { MergeStarted } from '../../src/activities/merge';
import type { BlockJobEnd } from '../../src/activities/wait-for-block-job';
import { blockJobId } from '../../src/config/names';
import { volumePath } from '../../src/domain/layout';
import { QmpDriver } from '../../src/drivers/qmp/qmp-driver';
import { Reclaimer } from '../../src/storage/reclaim';
import { VolumeUsage } from '../../src/volume-users';
import { holding } from '../harness/holding';
import { writeUnreadableImage } from '../harness/unreadable-image';

jest.setTimeout(60_000);
const run = promisify(execFile);

interface Lab {
  dir: string;
  root: string;
  runDir: string;
  deps: HostDeps;
  acts: HostActivities;
}

/** A fresh paused lab VM `vm1` with its own storage root, and the host steps over QmpDriver. */
async function startLab(): Promise<Lab> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lm-guard-'));
  const root = path.join(dir, 's');
  const runDir = path.join(dir, 'r');
  await createLabVm({
    storageRoot: root,
    runDir,
    vmId: 'vm1',
    disks: 2,
    volumes: 3,
    layerDataMiB: 1,
    sizeMiB: 8,
    guest: false,
  });
  const deps: HostDeps = {
    hostId: 'h1',
    storageRoot: root,
    runDir,
    driver: new QmpDriver(runDir),
    reclaimer: new Reclaimer(root),
    usage: new VolumeUsage(root),
  };
  return { dir, root, runDir, deps, acts: createHostActivities(deps) };
}

async function stopLab(lab: Lab | undefined): Promise<void> {
  if (!lab) return;
  lab.deps.usage.close();
  await lab.deps.reclaimer.drain();
  await lab.deps.driver.close();
  await destroyLabVm(lab.runDir, 'vm1').catch(() => undefined);
  fs.rmSync(lab.dir, { recursive: true, force: true });
}

const env = (): MockActivityEnvironment => new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') });
const step = (diskId: string, top: string, base: string) => ({
  vmId: 'vm1',
  diskId,
  topVolumeId: top,
  baseVolumeId: base,
});
const mergeIn = (diskId: string, top: string, base: string) => ({
  ...step(diskId, top, base),
  bandwidthBytesPerSec: 0,
});

async function failureOf(p: Promise<unknown>): Promise<ApplicationFailure> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApplicationFailure) return err;
    throw err;
  }
  throw new Error('expected a refusal, the step went on');
}

/** sha256 of every file under `dir` (the reclaim names and tombstones included). */
function hashTree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const p = path.join(e.parentPath, e.name);
    if (e.isFile()) out.set(p, createHash('sha256').update(fs.readFileSync(p)).digest('hex'));
  }
  return out;
}

const qemuImg = (...args: string[]): Promise<unknown> => run('qemu-img', args);

// ---------------------------------------------------------------------------------------------
// Processes: started per test, stopped by pid in afterEach.

const procs: ChildProcess[] = [];

function start(cmd: string, args: string[], stdio: ('ignore' | 'pipe' | number)[]): number {
  const child = spawn(cmd, args, { stdio });
  procs.push(child);
  if (child.pid === undefined) throw new Error(`${cmd} did not start`);
  return child.pid;
}

/** A plain process (sleep) that holds `file` open read-only, as fd 3. */
function holdOpen(file: string): number {
  const fd = fs.openSync(file, 'r');
  try {
    return start('sleep', ['300'], ['ignore', 'ignore', 'ignore', fd]);
  } finally {
    fs.closeSync(fd);
  }
}

afterEach(async () => {
  const live = procs.splice(0).filter((p) => p.exitCode === null && p.signalCode === null && p.pid !== undefined);
  for (const p of live) process.kill(p.pid as number, 'SIGKILL');
  await Promise.all(live.map((p) => new Promise((r) => p.once('exit', r))));
});

// ---------------------------------------------------------------------------------------------

describe('on a running VM, every refusal leaves every file as it was', () => {
  let lab: Lab;
  let before: Map<string, string>;
  let vol: (diskId: string, id: string) => string;
  /** A volume of disk0 in no chain of the VM (a top deleted from QEMU's graph, say). */
  let loose: string;

  beforeAll(async () => {
    lab = await startLab();
    vol = (diskId, id) => volumePath(lab.root, diskId, id);
    loose = vol('disk0', 'x9');
    await qemuImg('create', '-q', '-f', 'qcow2', loose, '8M');
  });
  afterAll(() => stopLab(lab));
  beforeEach(() => {
    before = hashTree(lab.root);
  });
  /** Every file as before, and QEMU runs no job. */
  async function untouched(): Promise<void> {
    expect(hashTree(lab.root)).toEqual(before);
    expect(await lab.deps.driver.listJobs('vm1')).toEqual([]);
  }
  /** A file under the root, made for one test and removed after it; the hash is taken after it exists. */
  async function withImage(file: string, backing: string | undefined, body: () => Promise<void>): Promise<void> {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    await qemuImg('create', '-q', '-f', 'qcow2', ...(backing ? ['-b', backing, '-F', 'qcow2'] : []), file, '8M');
    try {
      before = hashTree(lab.root);
      await body();
    } finally {
      fs.rmSync(file, { force: true });
    }
  }

  describe('deleteVolume', () => {
    test('the active volume, still in the chain and used by nothing but its own QEMU: VolumeInUse, not deleted', async () => {
      const f = await failureOf(env().run(lab.acts.deleteVolume, step('disk0', 'd0v2', 'd0v1')));
      expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
      expect(f.message).toBe('volume d0v2 is still in the chain of disk disk0; not deleted');
      await untouched();
      // Still attached: QEMU holds its nodes.
      expect(await lab.deps.driver.nodesHolding('vm1', vol('disk0', 'd0v2'))).toEqual(['q-d0v2', 'f-d0v2']);
    });

    test('an image elsewhere under the root backed by it (absolute name, any extension): VolumeInUse', async () => {
      await withImage(path.join(lab.root, 'other', 'clone.img'), loose, async () => {
        const f = await failureOf(env().run(lab.acts.deleteVolume, step('disk0', 'x9', 'd0v1')));
        expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
        expect(f.message).toMatch(/^volume x9 of disk disk0 is still used: /);
        expect(f.message).toContain(path.join(lab.root, 'other', 'clone.img'));
        expect(f.message).toMatch(/; nothing was touched$/);
        await untouched();
      });
    });

    test('an image backed by it by a relative name, no extension: VolumeInUse', async () => {
      await withImage(path.join(lab.root, 'images', 'd9', 'linked'), '../disk0/x9.qcow2', async () => {
        const f = await failureOf(env().run(lab.acts.deleteVolume, step('disk0', 'x9', 'd0v1')));
        expect(f.type).toBe('VolumeInUse');
        expect(f.message).toContain('images/d9/linked');
        await untouched();
      });
    });

    test('a plain process holding it open: VolumeInUse naming the process', async () => {
      const pid = holdOpen(loose);
      await holding(pid, loose);
      const f = await failureOf(env().run(lab.acts.deleteVolume, step('disk0', 'x9', 'd0v1')));
      expect(f.type).toBe('VolumeInUse');
      expect(f.message).toContain(`${pid}`);
      expect(f.message).toContain('sleep');
      await untouched();
    });

    test('another QEMU holding it open and locked: VolumeInUse', async () => {
      const pid = start('qemu-io', ['-f', 'qcow2', loose], ['pipe', 'ignore', 'ignore']);
      await holding(pid, loose);
      const f = await failureOf(env().run(lab.acts.deleteVolume, step('disk0', 'x9', 'd0v1')));
      expect(f.type).toBe('VolumeInUse');
      expect(f.message).toContain('qemu-io');
      await untouched();
    });

    test('an image under the root whose header cannot be read: CorruptImageHeader, nothing deleted', async () => {
      const bad = writeUnreadableImage(path.join(lab.root, 'other', 'broken.qcow2'));
      try {
        before = hashTree(lab.root);
        const f = await failureOf(env().run(lab.acts.deleteVolume, step('disk0', 'x9', 'd0v1')));
        expect(f.type).toBe('CorruptImageHeader');
        expect(f.message).toContain('broken.qcow2');
        await untouched();
      } finally {
        fs.rmSync(bad);
      }
    });

    test('a disk whose image dir leads out of the storage root: PathOutsideStorageRoot, nothing deleted', async () => {
      const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'lm-outside-'));
      try {
        await qemuImg('create', '-q', '-f', 'qcow2', path.join(outside, 't.qcow2'), '8M');
        fs.symlinkSync(outside, path.join(lab.root, 'images', 'disk8'));
        before = hashTree(lab.root);
        const outsideBefore = hashTree(outside);
        const f = await failureOf(env().run(lab.acts.deleteVolume, step('disk8', 't', 'b')));
        expect(f).toMatchObject({ type: 'PathOutsideStorageRoot', nonRetryable: true });
        expect(f.message).toContain(outside);
        expect(hashTree(outside)).toEqual(outsideBefore);
        await untouched();
      } finally {
        fs.rmSync(path.join(lab.root, 'images', 'disk8'), { force: true });
        fs.rmSync(outside, { recursive: true, force: true });
      }
    });
  });

  // Each form of docs/failure-semantics.md "Names the guard reads", in an image elsewhere under the
  // root (test/qemu/guard-vs-qemu.test.ts holds each against QEMU's own answer).
  describe('names in every form QEMU reads', () => {
    const named = (): string => path.join(lab.root, 'other', 'named.qcow2');
    let outside: string;
    beforeAll(() => {
      outside = fs.mkdtempSync(path.join(os.tmpdir(), 'lm-names-'));
      fs.symlinkSync(path.join(lab.root, 'images'), path.join(lab.root, 'alias'));
      fs.mkdirSync(path.join(lab.root, 'other', 'sub'), { recursive: true });
      fs.symlinkSync(path.join(lab.root, 'images', 'disk0'), path.join(lab.root, 'other', 'sub', 'jump'));
      fs.symlinkSync(vol('disk0', 'x9'), path.join(lab.root, 'other', 'x9-link.qcow2'));
    });
    afterAll(() => {
      for (const p of ['alias', 'other/sub', 'other/x9-link.qcow2'])
        fs.rmSync(path.join(lab.root, p), { recursive: true, force: true });
      fs.rmSync(outside, { recursive: true, force: true });
    });

    /** `named` holds `name` as its backing (or data) file while `body` runs; hashes taken after. */
    async function withName(name: string, dataFile: boolean, body: () => Promise<void>): Promise<void> {
      if (dataFile) {
        await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${outside}/scratch`, named(), '8M');
        await qemuImg('amend', '-f', 'qcow2', '-o', `data_file=${name}`, named()); // the header alone
        fs.rmSync(`${outside}/scratch`);
      } else {
        await qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', name, '-F', 'qcow2', named(), '8M');
      }
      try {
        before = hashTree(lab.root);
        await body();
      } finally {
        fs.rmSync(named(), { force: true });
      }
    }

    const x9 = (): string => vol('disk0', 'x9');
    const inUse = (why: string) => ({
      type: 'VolumeInUse',
      message: `volume x9 of disk disk0 is still used: ${why}; nothing was touched`,
    });
    const forms: [string, () => string, boolean, () => { type: string; message: string }][] = [
      ['file: and an absolute path', () => `file:${x9()}`, false, () => inUse(`it is the backing file of ${named()}`)],
      [
        'json: a qcow2 node over a file node',
        () => `json:{"driver":"qcow2","file":{"driver":"file","filename":"${x9()}"}}`,
        false,
        () => inUse(`it is the backing file of ${named()}`),
      ],
      [
        'json: dotted keys',
        () => `json:{"file.driver":"file","file.filename":"${x9()}"}`,
        false,
        () => inUse(`it is the backing file of ${named()}`),
      ],
      [
        'a directory symlink',
        () => path.join(lab.root, 'alias', 'disk0', 'x9.qcow2'),
        false,
        () => inUse(`it is the backing file of ${named()}`),
      ],
      [
        '.. after a symlink (physical)',
        () => 'sub/jump/../disk0/x9.qcow2',
        false,
        () => inUse(`it is the backing file of ${named()}`),
      ],
      ['a relative name', () => '../images/disk0/x9.qcow2', false, () => inUse(`it is the backing file of ${named()}`)],
      ['doubled slashes', () => x9().replace(/\//g, '//'), false, () => inUse(`it is the backing file of ${named()}`)],
      ['a file symlink', () => 'x9-link.qcow2', false, () => inUse(`it is the backing file of ${named()}`)],
      [
        'json: a probed format over a filename',
        () => `json:{"file":{"filename":"${x9()}"}}`,
        false,
        () => inUse(`it is the backing file of ${named()}`),
      ],
      [
        'json: backing null over the file',
        () => `json:{"driver":"qcow2","file":{"driver":"file","filename":"${x9()}"},"backing":null}`,
        false,
        () => inUse(`it is the backing file of ${named()}`),
      ],
      ['an external data file', () => x9(), true, () => inUse(`it is the external data file of ${named()}`)],
      [
        'a file outside the root naming it in turn',
        () => `${outside}/b.qcow2`,
        false,
        () => inUse(`it is the backing file of ${named()} (through ${outside}/b.qcow2)`),
      ],
      [
        'nbd://',
        () => 'nbd://127.0.0.1:9/x9',
        false,
        () => ({
          type: 'UnresolvedImageName',
          message: `volume x9 of disk disk0 is still used?: ${named()} holds a name this host cannot tie to a file, so it may use it: its backing name "nbd://127.0.0.1:9/x9" is opened by QEMU's nbd protocol, not as a file of this host; nothing was touched`,
        }),
      ],
      [
        'file: and a relative path',
        () => 'file:x9.qcow2',
        false,
        () => ({
          type: 'UnresolvedImageName',
          message: `volume x9 of disk disk0 is still used?: ${named()} holds a name this host cannot tie to a file, so it may use it: its backing name "file:x9.qcow2" is relative to the working directory of whichever process opens the image; nothing was touched`,
        }),
      ],
      ...(
        [
          [
            "json: QEMU's single quotes",
            `json:{'file':{'filename':'/x9'}}`,
            'is a json: specification this guard cannot parse',
          ],
          ['an unknown protocol', 'foo:x9.qcow2', "is opened by QEMU's foo protocol, not as a file of this host"],
          [
            'json: a relative filename',
            'json:{"file":{"driver":"file","filename":"x9.qcow2"}}',
            'is relative to the working directory of whichever process opens the image',
          ],
        ] as const
      ).map(([form, name, why]): (typeof forms)[number] => [
        form,
        () => name,
        false,
        () => ({
          type: 'UnresolvedImageName',
          message: `volume x9 of disk disk0 is still used?: ${named()} holds a name this host cannot tie to a file, so it may use it: its backing name ${JSON.stringify(name)} ${why}; nothing was touched`,
        }),
      ]),
      [
        'a relative data file name',
        () => 'x9.qcow2',
        true,
        () => ({
          type: 'UnresolvedImageName',
          message: `volume x9 of disk disk0 is still used?: ${named()} holds a name this host cannot tie to a file, so it may use it: its data file name "x9.qcow2" is relative to the working directory of whichever process opens the image; nothing was touched`,
        }),
      ],
    ];

    test.each(forms)(
      'deleteVolume, a name by %s: refused, every file as it was',
      async (_form, name, dataFile, expected) => {
        await qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', x9(), '-F', 'qcow2', `${outside}/b.qcow2`, '8M');
        const outsideBefore = hashTree(outside);
        await withName(name(), dataFile, async () => {
          const f = await failureOf(env().run(lab.acts.deleteVolume, step('disk0', 'x9', 'd0v1')));
          expect({ type: f.type, message: f.message }).toEqual(expected());
          expect(f.nonRetryable).toBe(true);
          await untouched();
        });
        expect(hashTree(outside)).toEqual(outsideBefore);
      },
    );

    test('merge, a base named by json: with an explicit backing: BaseShared, nothing started', async () => {
      const base = vol('disk0', 'd0v1');
      const name = `json:{"driver":"qcow2","file":{"driver":"file","filename":"${x9()}"},"backing":{"driver":"qcow2","file":{"driver":"file","filename":"${base}"}}}`;
      await withName(name, false, async () => {
        const f = await failureOf(env().run(lab.acts.merge, mergeIn('disk0', 'd0v2', 'd0v1')));
        expect(f.type).toBe('BaseShared');
        expect(f.message).toBe(
          `base volume d0v1 of disk disk0 is used outside its chain: it is the backing file of ${named()}; nothing was touched`,
        );
        await untouched();
      });
    });

    test('merge, an image naming storage of a network protocol: UnresolvedImageName, nothing started', async () => {
      await withName('nbd+unix:///e?socket=/run/nbd.sock', false, async () => {
        const f = await failureOf(env().run(lab.acts.merge, mergeIn('disk0', 'd0v2', 'd0v1')));
        expect(f).toMatchObject({ type: 'UnresolvedImageName', nonRetryable: true });
        expect(f.message).toMatch(/^base volume d0v1 of disk disk0 is used outside its chain\?: /);
        expect(f.message).toContain(`${named()} holds a name this host cannot tie to a file`);
        await untouched();
      });
    });
  });

  describe('merge', () => {
    test('a top in no chain of the disk: VolumeNotInChain, nothing started', async () => {
      const f = await failureOf(env().run(lab.acts.merge, mergeIn('disk0', 'x9', 'd0v1')));
      expect(f).toMatchObject({ type: 'VolumeNotInChain', nonRetryable: true });
      expect(f.message).toBe('top volume x9 is not in the chain of disk disk0 (d0v2 -> d0v1 -> d0v0)');
      await untouched();
    });

    test('a base that is not the backing of the top: BaseNotBacking, nothing started', async () => {
      const f = await failureOf(env().run(lab.acts.merge, mergeIn('disk0', 'd0v2', 'd0v0')));
      expect(f).toMatchObject({ type: 'BaseNotBacking', nonRetryable: true });
      expect(f.message).toBe('base volume d0v0 is not the backing of top d0v2 on disk disk0 (d0v2 -> d0v1 -> d0v0)');
      await untouched();
    });

    test('a base that another image elsewhere names as backing (absolute): BaseShared', async () => {
      await withImage(path.join(lab.root, 'clones', 'vm9.disk'), vol('disk0', 'd0v1'), async () => {
        const f = await failureOf(env().run(lab.acts.merge, mergeIn('disk0', 'd0v2', 'd0v1')));
        expect(f).toMatchObject({ type: 'BaseShared', nonRetryable: true });
        expect(f.message).toMatch(/^base volume d0v1 of disk disk0 is used outside its chain: /);
        expect(f.message).toContain('clones/vm9.disk');
        await untouched();
      });
    });

    test('a base that another image names by a relative path: BaseShared', async () => {
      await withImage(path.join(lab.root, 'images', 'disk5', 'c.qcow2'), '../disk0/d0v1.qcow2', async () => {
        const f = await failureOf(env().run(lab.acts.merge, mergeIn('disk0', 'd0v2', 'd0v1')));
        expect(f.type).toBe('BaseShared');
        expect(f.message).toContain('images/disk5/c.qcow2');
        await untouched();
      });
    });

    test('a base another QEMU runs an overlay on (outside the root): BaseShared naming that QEMU', async () => {
      const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'lm-other-vm-'));
      try {
        const overlay = path.join(elsewhere, 'o.qcow2');
        await qemuImg('create', '-q', '-f', 'qcow2', '-b', vol('disk1', 'd1v1'), '-F', 'qcow2', overlay);
        const pid = start(
          'qemu-system-x86_64',
          [
            ...['-S', '-nodefaults', '-display', 'none', '-machine', 'q35,accel=tcg'],
            ...['-drive', `file=${overlay},if=none,id=d,format=qcow2`, '-device', 'virtio-blk-pci,drive=d'],
          ],
          ['ignore', 'ignore', 'ignore'],
        );
        await holding(pid, vol('disk1', 'd1v1'));
        const f = await failureOf(env().run(lab.acts.merge, mergeIn('disk1', 'd1v2', 'd1v1')));
        expect(f.type).toBe('BaseShared');
        expect(f.message).toContain(`${pid}`);
        expect(f.message).toContain('qemu-system');
        await untouched();
      } finally {
        fs.rmSync(elsewhere, { recursive: true, force: true });
      }
    });

    test('a top another QEMU process holds open: VolumeInUse', async () => {
      const top = vol('disk0', 'd0v2');
      // Opened without its backing file, so only the top is held.
      const spec = JSON.stringify({ driver: 'qcow2', file: { driver: 'file', filename: top }, backing: null });
      const pid = start('qemu-io', ['-r', '-U', `json:${spec}`], ['pipe', 'ignore', 'ignore']);
      await holding(pid, top);
      const f = await failureOf(env().run(lab.acts.merge, mergeIn('disk0', 'd0v2', 'd0v1')));
      expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
      expect(f.message).toMatch(/^top volume d0v2 of disk disk0 is used outside its chain: .*qemu-io/);
      await untouched();
    });

    test('an intermediate top another image is backed by: VolumeInUse', async () => {
      await withImage(path.join(lab.root, 'other', 'snap'), vol('disk0', 'd0v1'), async () => {
        const f = await failureOf(env().run(lab.acts.merge, mergeIn('disk0', 'd0v1', 'd0v0')));
        expect(f.type).toBe('VolumeInUse');
        expect(f.message).toContain('other/snap');
        await untouched();
      });
    });
  });

  describe('verifyChain', () => {
    test('a top still in the chain: ChainVerificationFailed, with the chain seen', async () => {
      const f = await failureOf(env().run(lab.acts.verifyChain, step('disk0', 'd0v2', 'd0v1')));
      expect(f).toMatchObject({ type: 'ChainVerificationFailed', nonRetryable: true });
      expect(f.message).toBe(
        'chain check failed on disk disk0: top volume d0v2 is still in the chain (d0v2 -> d0v1 -> d0v0); volume kept',
      );
      await untouched();
    });

    test('a base missing from the chain: ChainVerificationFailed', async () => {
      const f = await failureOf(env().run(lab.acts.verifyChain, step('disk0', 'x9', 'x8')));
      expect(f.type).toBe('ChainVerificationFailed');
      expect(f.message).toBe(
        'chain check failed on disk disk0: base volume x8 is missing from the chain (d0v2 -> d0v1 -> d0v0); volume kept',
      );
    });

    test('top gone and base present: passes with the chain', async () => {
      await expect(env().run(lab.acts.verifyChain, step('disk0', 'x9', 'd0v1'))).resolves.toEqual({
        chain: ['d0v2', 'd0v1', 'd0v0'],
      });
    });
  });

  describe('with a block job of ours running', () => {
    // Started under disk0's job id for top x9 on disk1's device, rate-limited to a crawl.
    const jobId = blockJobId('disk0', 'x9');
    beforeAll(async () => {
      const chain = await lab.deps.driver.readChain('vm1', 'disk1');
      await lab.deps.driver.startCommit('vm1', {
        jobId,
        deviceNode: chain.rootNode,
        topNode: chain.volumes[1].nodeName,
        baseNode: chain.volumes[2].nodeName,
        speed: 1,
      });
    });
    afterAll(async () => {
      await env().run(lab.acts.cancelBlockJob, { vmId: 'vm1', diskId: 'disk0', jobId });
      await lab.deps.driver.dismissJob('vm1', jobId);
    });
    /** The running job writes disk1's base: everything else must be as before. */
    function untouchedButJobBase(): void {
      const now = hashTree(lab.root);
      now.delete(vol('disk1', 'd1v0'));
      const was = new Map(before);
      was.delete(vol('disk1', 'd1v0'));
      expect(now).toEqual(was);
    }

    test('a merge on a disk that runs a job of ours: DiskBusy, before QEMU is asked', async () => {
      const f = await failureOf(env().run(lab.acts.merge, mergeIn('disk0', 'd0v2', 'd0v1')));
      expect(f).toMatchObject({ type: 'DiskBusy', nonRetryable: true });
      expect(f.message).toMatch(
        /^disk disk0 already runs block job lm\.disk0\.x9 \((running|ready|paused)\); one job per disk$/,
      );
      expect((await lab.deps.driver.listJobs('vm1')).map((j) => j.id)).toEqual([jobId]);
      untouchedButJobBase();
    });

    test('a delete while its block job has not concluded: VolumeInUse, file kept', async () => {
      const f = await failureOf(env().run(lab.acts.deleteVolume, step('disk0', 'x9', 'd0v1')));
      expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
      expect(f.message).toMatch(/^volume x9 is still used by block job lm\.disk0\.x9 \(\w+\); not deleted$/);
      expect(fs.existsSync(loose)).toBe(true);
      untouchedButJobBase();
    });

    test('the wait on a job cancelled in QEMU ends concluded with its error, never as success', async () => {
      const other = blockJobId('disk1', 'd1v2');
      // Its own job on disk0 (the running one holds disk1), cancelled at once.
      const chain = await lab.deps.driver.readChain('vm1', 'disk0');
      await lab.deps.driver.startCommit('vm1', {
        jobId: other,
        deviceNode: chain.rootNode,
        topNode: chain.volumes[1].nodeName,
        baseNode: chain.volumes[2].nodeName,
        speed: 1,
      });
      await lab.deps.driver.cancelJob('vm1', other);
      const end = await env().run(lab.acts.waitForBlockJob, {
        vmId: 'vm1',
        diskId: 'disk1',
        jobId: other,
        pollIntervalMs: 50,
      });
      expect(end).toMatchObject({
        outcome: 'concluded',
        error: expect.stringMatching(/cancel/i),
        pivotRequested: false,
      });
      await lab.deps.driver.dismissJob('vm1', other);
      // A job QEMU no longer lists: vanished, which says nothing.
      await expect(
        env().run(lab.acts.waitForBlockJob, { vmId: 'vm1', diskId: 'disk1', jobId: other, pollIntervalMs: 50 }),
      ).resolves.toEqual({ outcome: 'vanished', pivotRequested: false });
    });
  });
});

describe('hard links are not uses', () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab();
  });
  afterAll(() => stopLab(lab));

  test('with the top and the base hard-linked under other names, merge and delete proceed', async () => {
    const vol = (id: string): string => volumePath(lab.root, 'disk0', id);
    const links = path.join(lab.root, 'links');
    fs.mkdirSync(links);
    fs.linkSync(vol('d0v1'), path.join(links, 'top-copy.bin'));
    fs.linkSync(vol('d0v0'), path.join(links, 'base.qcow2'));
    const started: MergeStarted = await env().run(lab.acts.merge, mergeIn('disk0', 'd0v1', 'd0v0'));
    expect(started).toMatchObject({ outcome: 'started', kind: 'intermediate' });
    const end: BlockJobEnd = await env().run(lab.acts.waitForBlockJob, {
      vmId: 'vm1',
      diskId: 'disk0',
      jobId: started.jobId,
      pollIntervalMs: 50,
    });
    expect(end).toMatchObject({ outcome: 'concluded' });
    expect(end.outcome === 'concluded' ? end.error : 'vanished').toBeUndefined();
    await expect(env().run(lab.acts.verifyChain, step('disk0', 'd0v1', 'd0v0'))).resolves.toEqual({
      chain: ['d0v2', 'd0v0'],
    });
    await expect(env().run(lab.acts.deleteVolume, step('disk0', 'd0v1', 'd0v0'))).resolves.toEqual({
      deleted: true,
      path: vol('d0v1'),
    });
    expect(fs.existsSync(vol('d0v1'))).toBe(false);
    // The other names keep the data.
    expect(fs.existsSync(path.join(links, 'top-copy.bin'))).toBe(true);
    expect(fs.existsSync(path.join(links, 'base.qcow2'))).toBe(true);
  });
});

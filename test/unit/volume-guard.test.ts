/**
 * guardCommit and guardDelete (src/activities/volume-guard.ts) called directly with each situation
 * they refuse, on real qcow2 images and real processes: the VM is a real QEMU started once for the
 * file (-S, -machine none, no guest) holding disk d1's chain v2 -> v1 -> v0 open and locked, which
 * QmpDriver's hypervisorPids finds by its QMP socket in the run dir; the other users are a `sleep`
 * holding an fd and a `qemu-io` holding the image open and locked. Cheap enough for the mutation test set (test/mutation/jest.config.js).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { type ApplicationFailure } from '@temporalio/common';

import type { HostDeps } from '../../src/activities/deps';
import { guardCommit, guardDelete } from '../../src/activities/volume-guard';
import { qmpSocketPath, volumePath } from '../../src/domain/layout';
import type { DiskChain } from '../../src/drivers/driver';
import { QmpDriver } from '../../src/drivers/qmp/qmp-driver';
import { vmQemuPids } from '../../src/drivers/qmp/qmp-pid';
import { Reclaimer } from '../../src/storage/reclaim';
import { VolumeUsage } from '../../src/volume-users';
import { failureOf } from '../harness/failure';
import { holding } from '../harness/holding';
import { writeUnreadableImage } from '../harness/unreadable-image';

jest.setTimeout(60_000);
const run = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let dir: string;
let root: string;
let runDir: string;
let deps: HostDeps;
let vm: ChildProcess;
const procs: ChildProcess[] = [];
const vol = (id: string, diskId = 'd1'): string => volumePath(root, diskId, id);
/** Disk d1 as QEMU reports it: active first. */
const chain = (): DiskChain => ({
  diskId: 'd1',
  rootNode: 'top',
  volumes: ['v2', 'v1', 'v0'].map((id) => ({ path: vol(id), nodeName: `q-${id}` })),
});

const qemuImg = (...args: string[]): Promise<unknown> => run('qemu-img', args);

function start(cmd: string, args: string[], stdio: ('ignore' | 'pipe' | number)[], into = procs): number {
  const child = spawn(cmd, args, { stdio });
  into.push(child);
  if (child.pid === undefined) throw new Error(`${cmd} did not start`);
  return child.pid;
}

async function stop(children: ChildProcess[]): Promise<void> {
  const live = children.splice(0).filter((p) => p.exitCode === null && p.signalCode === null);
  for (const p of live) process.kill(p.pid as number, 'SIGKILL');
  await Promise.all(live.map((p) => new Promise((r) => p.once('exit', r))));
}

/** A `sleep` holding `file` open read-only (fd 3), nothing else. */
async function holdOpen(file: string): Promise<number> {
  const fd = fs.openSync(file, 'r');
  let pid: number;
  try {
    pid = start('sleep', ['300'], ['ignore', 'ignore', 'ignore', fd]);
  } finally {
    fs.closeSync(fd);
  }
  await holding(pid, file);
  return pid;
}

/** A `qemu-io` with `file` open and locked as a qcow2 image without its backing chain. */
async function qemuIoOn(file: string): Promise<number> {
  const spec = JSON.stringify({ driver: 'qcow2', file: { driver: 'file', filename: file }, backing: null });
  const pid = start('qemu-io', ['-r', '-U', `json:${spec}`], ['pipe', 'ignore', 'ignore']);
  await holding(pid, file);
  return pid;
}

/** An image under the root, removed after the test. */
const extra: string[] = [];
async function image(file: string, backing?: string): Promise<string> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await qemuImg('create', '-q', '-f', 'qcow2', ...(backing ? ['-u', '-b', backing, '-F', 'qcow2'] : []), file, '1M');
  extra.push(file);
  return file;
}

/** A file with a qcow2 magic whose backing-file offset lies far past its end: its header cannot be read. */
function brokenImage(file: string): string {
  extra.push(writeUnreadableImage(file));
  return file;
}

const refusal = (p: Promise<unknown>): Promise<ApplicationFailure> =>
  failureOf(p, 'expected a refusal, the guard let it pass');

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lm-vguard-'));
  root = path.join(dir, 's');
  runDir = path.join(dir, 'r');
  fs.mkdirSync(path.join(runDir, 'vm1'), { recursive: true });
  fs.mkdirSync(path.dirname(vol('v0')), { recursive: true });
  await qemuImg('create', '-q', '-f', 'qcow2', vol('v0'), '1M');
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'v0.qcow2', '-F', 'qcow2', vol('v1'));
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'v1.qcow2', '-F', 'qcow2', vol('v2'));
  await qemuImg('create', '-q', '-f', 'qcow2', vol('x9'), '1M'); // in no chain
  const blockdev = JSON.stringify({
    driver: 'qcow2',
    'node-name': 'q-v2',
    file: { driver: 'file', filename: vol('v2') },
  });
  const vmArgs = [
    ...['-S', '-nodefaults', '-display', 'none', '-machine', 'none', '-blockdev', blockdev],
    ...['-qmp', `unix:${qmpSocketPath(runDir, 'vm1')},server=on,wait=off`],
  ];
  const vms: ChildProcess[] = [];
  start('qemu-system-x86_64', vmArgs, ['ignore', 'ignore', 'ignore'], vms);
  vm = vms[0];
  await holding(vm.pid as number, vol('v0'));
  const deadline = Date.now() + 30_000;
  while (vmQemuPids(runDir, 'vm1').length === 0) {
    if (Date.now() > deadline) throw new Error('the VM never listened on its QMP socket');
    await sleep(25);
  }
  deps = {
    hostId: 'h1',
    storageRoot: root,
    runDir,
    // The guard asks the driver for the VM's QEMU: the real lookup, by the QMP socket's listener.
    driver: new QmpDriver(runDir),
    reclaimer: new Reclaimer(root),
    usage: new VolumeUsage(root),
  };
});

afterEach(async () => {
  await stop(procs);
  for (const f of extra.splice(0)) fs.rmSync(f, { force: true });
});

afterAll(async () => {
  deps?.usage.close();
  await deps?.driver.close();
  if (vm) await stop([vm]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('guardCommit', () => {
  test("passes when nothing but the chain and the VM's QEMU uses the top and the base", async () => {
    await expect(guardCommit(deps, 'vm1', chain(), 1, 2)).resolves.toBeUndefined(); // intermediate
    await expect(guardCommit(deps, 'vm1', chain(), 0, 1)).resolves.toBeUndefined(); // active
  });

  test('the same chain for another VM: its QEMU is not that VM, so the base is shared', async () => {
    const f = await refusal(guardCommit(deps, 'vm2', chain(), 1, 2));
    expect(f).toMatchObject({ type: 'BaseShared', nonRetryable: true });
    expect(f.message).toContain(`process ${vm.pid} (qemu-system`);
  });

  test('a base another image under the root names as backing: BaseShared, naming it and that image', async () => {
    const clone = await image(path.join(root, 'other', 'clone.qcow2'), vol('v0'));
    const f = await refusal(guardCommit(deps, 'vm1', chain(), 1, 2));
    expect(f).toMatchObject({ type: 'BaseShared', nonRetryable: true });
    expect(f.message).toBe(
      `base volume v0 of disk d1 is used outside its chain: it is the backing file of ${clone}; nothing was touched`,
    );
    expect(f.details).toEqual([{ users: [{ kind: 'backingOf', image: clone }] }]);
  });

  test('a base a process holds open: BaseShared naming the process', async () => {
    const pid = await holdOpen(vol('v0'));
    const f = await refusal(guardCommit(deps, 'vm1', chain(), 1, 2));
    expect(f.type).toBe('BaseShared');
    expect(f.message).toContain(`process ${pid} (sleep) has it open`);
  });

  test('an intermediate top another image names as backing: VolumeInUse, naming it', async () => {
    const clone = await image(path.join(root, 'images', 'd2', 'c.qcow2'), '../d1/v1.qcow2');
    const f = await refusal(guardCommit(deps, 'vm1', chain(), 1, 2));
    expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
    expect(f.message).toBe(
      `top volume v1 of disk d1 is used outside its chain: it is the backing file of ${clone}; nothing was touched`,
    );
  });

  test('an active top any image names as backing: VolumeInUse (no layer above it is expected)', async () => {
    await image(path.join(root, 'other', 'snap.qcow2'), vol('v2'));
    const f = await refusal(guardCommit(deps, 'vm1', chain(), 0, 1));
    expect(f.type).toBe('VolumeInUse');
    expect(f.message).toMatch(/^top volume v2 of disk d1 is used outside its chain: .*snap\.qcow2/);
  });

  test('a top another QEMU process holds open and locked: VolumeInUse, naming its locks', async () => {
    const pid = await qemuIoOn(vol('v1'));
    const f = await refusal(guardCommit(deps, 'vm1', chain(), 1, 2));
    expect(f.type).toBe('VolumeInUse');
    // Each user in turn, separated: the open fd, then its locks.
    expect(f.message).toMatch(
      new RegExp(
        `: process ${pid} \\(qemu-io\\) has it open; process ${pid} \\(qemu-io\\) holds locks on it \\(OFDLCK`,
      ),
    );
  });

  test('an image under the root whose header cannot be read, and nothing else: CorruptImageHeader', async () => {
    const bad = brokenImage(path.join(root, 'other', 'broken.qcow2'));
    const f = await refusal(guardCommit(deps, 'vm1', chain(), 1, 2));
    expect(f).toMatchObject({ type: 'CorruptImageHeader', nonRetryable: true });
    expect(f.message).toMatch(/^base volume v0 of disk d1 is used outside its chain\?: /);
    expect(f.message).toContain(`${bad} could not be read`);
    expect(f.details).toEqual([{ users: [expect.objectContaining({ kind: 'unreadable', path: bad })] }]);
  });

  test('an unreadable header beside a real user: the real refusal, not CorruptImageHeader', async () => {
    brokenImage(path.join(root, 'other', 'broken.qcow2'));
    await image(path.join(root, 'other', 'clone.qcow2'), vol('v0'));
    expect((await refusal(guardCommit(deps, 'vm1', chain(), 1, 2))).type).toBe('BaseShared');
  });
});

describe('guardDelete', () => {
  test("passes for a volume nothing uses, and for one only the VM's own QEMU holds", async () => {
    await expect(guardDelete(deps, 'vm1', vol('x9'), 'd1')).resolves.toBeUndefined();
    await expect(guardDelete(deps, 'vm1', vol('v2'), 'd1')).resolves.toBeUndefined();
  });

  test("a volume another VM's QEMU holds: VolumeInUse naming it", async () => {
    const f = await refusal(guardDelete(deps, 'vm2', vol('v2'), 'd1'));
    expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
    expect(f.message).toMatch(new RegExp(`^volume v2 of disk d1 is still used: process ${vm.pid} \\(qemu-system`));
  });

  test('a volume an image names as backing: VolumeInUse, naming the image', async () => {
    const clone = await image(path.join(root, 'other', 'clone.img'), vol('x9'));
    const f = await refusal(guardDelete(deps, 'vm1', vol('x9'), 'd1'));
    expect(f).toMatchObject({ type: 'VolumeInUse', nonRetryable: true });
    expect(f.message).toBe(
      `volume x9 of disk d1 is still used: it is the backing file of ${clone}; nothing was touched`,
    );
    expect(f.details).toEqual([{ users: [{ kind: 'backingOf', image: clone }] }]);
  });

  test('a volume a process holds open: VolumeInUse naming the process', async () => {
    const pid = await holdOpen(vol('x9'));
    const f = await refusal(guardDelete(deps, 'vm1', vol('x9'), 'd1'));
    expect(f.type).toBe('VolumeInUse');
    expect(f.message).toContain(`process ${pid} (sleep) has it open`);
  });

  test('an image whose header cannot be read: CorruptImageHeader, the volume may be its backing', async () => {
    const bad = brokenImage(path.join(root, 'images', 'd3', 'broken.qcow2'));
    const f = await refusal(guardDelete(deps, 'vm1', vol('x9'), 'd1'));
    expect(f).toMatchObject({ type: 'CorruptImageHeader', nonRetryable: true });
    expect(f.message).toMatch(/^volume x9 of disk d1 is still used\?: /);
    expect(f.message).toContain(`${bad} could not be read`);
    expect(f.message).toMatch(/; nothing was touched$/);
  });
});

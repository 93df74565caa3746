/**
 * The host-wide volume-users guard against REAL processes: two paused QEMUs (one runs a VM's chain
 * on the volume, one runs an overlay elsewhere under the root that is backed by it), a plain
 * process holding the volume open, and qemu-io holding a hard link of another volume. Every
 * process is stopped by its pid in afterAll; every file must be byte-for-byte unchanged.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { qmpSocketPath } from '../../src/domain/layout';
import { vmQemuPids } from '../../src/drivers/qmp/qmp-pid';
import { VolumeUsage, type VolumeUser } from '../../src/volume-users';
import { holding } from '../harness/holding';

jest.setTimeout(60_000);
const run = promisify(execFile);

let dir: string;
let root: string;
let runDir: string;
const at = (...p: string[]): string => path.join(root, ...p);
const procs: ChildProcess[] = [];
let before: Map<string, string>;
let qemuA: number;
let qemuB: number;
let sleeper: number;
let qemuIo: number;

function hashTree(d: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of fs.readdirSync(d, { withFileTypes: true, recursive: true })) {
    const p = path.join(e.parentPath, e.name);
    if (e.isFile()) out.set(p, createHash('sha256').update(fs.readFileSync(p)).digest('hex'));
  }
  return out;
}

function start(
  cmd: string,
  args: string[],
  stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'ignore', 'pipe'],
): number {
  const child = spawn(cmd, args, { stdio });
  procs.push(child);
  if (child.pid === undefined) throw new Error(`${cmd} did not start`);
  return child.pid;
}

function qemu(vmId: string, image: string): number {
  fs.mkdirSync(path.join(runDir, vmId), { recursive: true });
  return start('qemu-system-x86_64', [
    '-S',
    '-nodefaults',
    '-display',
    'none',
    '-machine',
    'q35,accel=tcg',
    '-blockdev',
    `driver=file,filename=${image},node-name=f0`,
    '-blockdev',
    'driver=qcow2,file=f0,node-name=q0',
    '-device',
    'virtio-blk-pci,drive=q0',
    '-qmp',
    `unix:${qmpSocketPath(runDir, vmId)},server=on,wait=off`,
  ]);
}

async function stopAll(): Promise<void> {
  for (const p of procs)
    if (p.exitCode === null && p.signalCode === null && p.pid !== undefined) process.kill(p.pid, 'SIGTERM');
  await Promise.all(
    procs.map((p) =>
      p.exitCode !== null || p.signalCode !== null ? undefined : new Promise((r) => p.once('exit', r)),
    ),
  );
}

const open = (pid: number, process: string, file: string): VolumeUser => ({
  kind: 'openBy',
  pid,
  process,
  paths: [file],
});
const locked = (pid: number, process: string): VolumeUser => ({
  kind: 'lockedBy',
  pid,
  process,
  locks: expect.arrayContaining([expect.stringMatching(/^OFDLCK /)]) as unknown as string[],
});

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vu-qemu-'));
  root = path.join(dir, 'storage');
  runDir = path.join(dir, 'run');
  const create = (file: string, backing?: string): Promise<unknown> => {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    return run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      ...(backing ? ['-b', backing, '-F', 'qcow2'] : []),
      file,
      '16M',
    ]);
  };
  await create(at('images/d1/base.qcow2'));
  await create(at('images/d1/top.qcow2'), 'base.qcow2');
  await create(at('images/d9/clone.qcow2'), at('images/d1/base.qcow2')); // another VM's overlay, elsewhere
  await create(at('images/d7/lonely.qcow2'));
  fs.linkSync(at('images/d7/lonely.qcow2'), at('images/d7/hard.qcow2'));
  before = hashTree(root);

  qemuA = qemu('vmA', at('images/d1/top.qcow2')); // opens base.qcow2 as its backing
  qemuB = qemu('vmB', at('images/d9/clone.qcow2')); // opens base.qcow2 too
  const fd = fs.openSync(at('images/d1/base.qcow2'), 'r');
  try {
    sleeper = start('sleep', ['300'], ['ignore', 'ignore', 'ignore', fd]);
  } finally {
    fs.closeSync(fd);
  }
  qemuIo = start('qemu-io', ['-f', 'qcow2', at('images/d7/hard.qcow2')], ['pipe', 'ignore', 'ignore']); // waits on stdin
  await Promise.all([
    holding(qemuA, at('images/d1/base.qcow2')),
    holding(qemuB, at('images/d1/base.qcow2')),
    holding(sleeper, at('images/d1/base.qcow2')),
    holding(qemuIo, at('images/d7/hard.qcow2')),
  ]);
});

afterAll(async () => {
  await stopAll();
  if (before) expect(hashTree(root)).toEqual(before);
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test("a VM's QEMU pid is found by its QMP socket", () => {
  expect(vmQemuPids(runDir, 'vmA')).toEqual([qemuA]);
  expect(vmQemuPids(runDir, 'vmB')).toEqual([qemuB]);
  expect(vmQemuPids(runDir, 'vmX')).toEqual([]);
});

test('the base of a running chain: every other user on the host, the VM itself and its own layer left out', async () => {
  const guard = new VolumeUsage(root);
  const base = at('images/d1/base.qcow2');
  const { users } = await guard.findUsers({
    volume: base,
    expectedImages: [at('images/d1/top.qcow2')],
    expectedPids: vmQemuPids(runDir, 'vmA'),
  });
  expect(users).toEqual([
    { kind: 'backingOf', image: at('images/d9/clone.qcow2') },
    ...[
      [open(qemuB, 'qemu-system-x86', base), locked(qemuB, 'qemu-system-x86')],
      [open(sleeper, 'sleep', base)], // open, no locks
    ]
      .sort((a, b) => (a[0] as { pid: number }).pid - (b[0] as { pid: number }).pid)
      .flat(),
  ]);
  // Nothing expected: the VM's QEMU and the chain's own top are users too.
  const all = await guard.findUsers({ volume: base });
  expect(all.users).toContainEqual({ kind: 'backingOf', image: at('images/d1/top.qcow2') });
  expect(all.users).toContainEqual(open(qemuA, 'qemu-system-x86', base));
  expect(all.users).toContainEqual(locked(qemuA, 'qemu-system-x86'));
  expect(all.users).toHaveLength(7); // 2 images, QEMU A and B open + locked, sleep open
});

test("the top of a running chain: only its VM's QEMU, reported unless expected", async () => {
  const guard = new VolumeUsage(root);
  const top = at('images/d1/top.qcow2');
  expect((await guard.findUsers({ volume: top })).users).toEqual([
    open(qemuA, 'qemu-system-x86', top),
    locked(qemuA, 'qemu-system-x86'),
  ]);
  expect((await guard.findUsers({ volume: top, expectedPids: [qemuA] })).users).toEqual([]);
});

test('a hard link held open and locked under another name is not a use of this name', async () => {
  const guard = new VolumeUsage(root);
  const [lonely, hard] = (
    await guard.findUsersOfEach([{ volume: at('images/d7/lonely.qcow2') }, { volume: at('images/d7/hard.qcow2') }])
  ).results;
  expect(lonely.users).toEqual([]);
  expect(hard.users).toEqual([open(qemuIo, 'qemu-io', at('images/d7/hard.qcow2')), locked(qemuIo, 'qemu-io')]);
});

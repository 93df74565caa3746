/**
 * QmpDriver's chain and job readers (readAllChains, listJobs) on a real QEMU, started once for the
 * file, paused (-S) with no guest: disk0 a qcow2 chain v2 -> v1 -> v0 opened as -blockdev nodes
 * with explicit backing (as the product's VMs are), disk1 a raw image, and a CD drive with no
 * medium; and a qcow2 image open as nodes of no device. What they return is what every refusal and
 * the chain check decide on; hypervisorPids and releaseVolume are what the guard and the delete use.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { qmpSocketPath, volumePath } from '../../src/domain/layout';
import { QmpDriver } from '../../src/drivers/qmp/qmp-driver';

jest.setTimeout(60_000);
const run = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const MiB = 1024 * 1024;

let dir: string;
let root: string;
let runDir: string;
let vm: ChildProcess | undefined;
let driver: QmpDriver;
const vol = (id: string): string => volumePath(root, 'disk0', id);
const raw = (): string => path.join(root, 'images', 'disk1', 'r.img');
/** An image QEMU holds open as nodes of no device, as a merged top is until the delete detaches it. */
const loose = (): string => path.join(root, 'images', 'disk0', 'loose.qcow2');

/** True once something accepts connections on `socketPath` (the probe closes at once). */
function accepts(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lm-readers-'));
  root = path.join(dir, 's');
  runDir = path.join(dir, 'r');
  fs.mkdirSync(path.join(runDir, 'vm1'), { recursive: true });
  fs.mkdirSync(path.dirname(vol('v0')), { recursive: true });
  fs.mkdirSync(path.dirname(raw()), { recursive: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', vol('v0'), '8M']);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v0.qcow2', '-F', 'qcow2', vol('v1')]);
  await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 7 0 4M', vol('v1')]);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'v1.qcow2', '-F', 'qcow2', vol('v2')]);
  await run('qemu-img', ['create', '-q', '-f', 'raw', raw(), '1M']);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', loose(), '1M']);
  const args = ['-S', '-nodefaults', '-display', 'none', '-machine', 'q35,accel=tcg'];
  let lower: string | undefined;
  for (const id of ['v0', 'v1', 'v2']) {
    args.push('-blockdev', `driver=file,filename=${vol(id)},node-name=f-${id},auto-read-only=on`);
    args.push('-blockdev', `driver=qcow2,file=f-${id},node-name=q-${id}${lower ? `,backing=${lower}` : ''}`);
    lower = `q-${id}`;
  }
  args.push('-device', `virtio-blk-pci,drive=q-v2,id=disk0`);
  args.push('-blockdev', `driver=file,filename=${raw()},node-name=f-raw`);
  args.push('-device', 'virtio-blk-pci,drive=f-raw,id=disk1');
  args.push('-drive', 'if=none,id=cd,media=cdrom', '-device', 'ide-cd,drive=cd,id=cd0');
  args.push('-blockdev', `driver=file,filename=${loose()},node-name=f-loose`);
  args.push('-blockdev', 'driver=qcow2,file=f-loose,node-name=q-loose');
  args.push('-qmp', `unix:${qmpSocketPath(runDir, 'vm1')},server=on,wait=off`);
  vm = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  driver = new QmpDriver(runDir);
  const deadline = Date.now() + 30_000;
  // The socket file appears at bind(), before QEMU listens: only a connection says it is ready.
  while (!(await accepts(qmpSocketPath(runDir, 'vm1')))) {
    if (vm.exitCode !== null || Date.now() > deadline) throw new Error('QEMU did not start');
    await sleep(25);
  }
});

afterAll(async () => {
  await driver?.close();
  if (vm && vm.exitCode === null && vm.signalCode === null) {
    const exited = new Promise((r) => vm?.once('exit', r));
    process.kill(vm.pid as number, 'SIGKILL');
    await exited;
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('readAllChains: each disk by its device id, active layer first, with its qcow2 node names; a drive with no medium is no disk', async () => {
  expect(await driver.readAllChains('vm1')).toEqual([
    {
      diskId: 'disk0',
      rootNode: 'q-v2',
      volumes: [
        { path: vol('v2'), nodeName: 'q-v2' },
        { path: vol('v1'), nodeName: 'q-v1' },
        { path: vol('v0'), nodeName: 'q-v0' },
      ],
    },
    // A raw image has no qcow2 node: no node name.
    { diskId: 'disk1', rootNode: 'f-raw', volumes: [{ path: raw(), nodeName: '' }] },
  ]);
});

test('listJobs: a running commit with its progress; after a cancel, concluded with its error; after a good end, no error', async () => {
  const commit = { deviceNode: 'q-v2', topNode: 'q-v1', baseNode: 'q-v0', backingFile: 'v0.qcow2' };
  await driver.startCommit('vm1', { ...commit, jobId: 'slow', speed: 1024 }); // 8 MiB at 1 KiB/s
  const [running] = await driver.listJobs('vm1');
  expect(running).toEqual({ id: 'slow', type: 'commit', status: 'running', offset: expect.any(Number), len: 8 * MiB });
  expect(running.offset).toBeLessThan(running.len);
  await driver.cancelJob('vm1', 'slow');
  const ended = async (id: string) => {
    for (;;) {
      const job = (await driver.listJobs('vm1')).find((j) => j.id === id);
      if (job?.status === 'concluded') return job;
      await driver.nextJobChange('vm1', 200);
    }
  };
  expect(await ended('slow')).toMatchObject({ status: 'concluded', error: 'Operation canceled' });
  await driver.dismissJob('vm1', 'slow');
  await driver.startCommit('vm1', { ...commit, jobId: 'fast', speed: 0 });
  const done = await ended('fast');
  expect(done).toEqual({ id: 'fast', type: 'commit', status: 'concluded', offset: 8 * MiB, len: 8 * MiB });
  expect('error' in done).toBe(false);
  await driver.dismissJob('vm1', 'fast');
  expect(await driver.listJobs('vm1')).toEqual([]);
});

test("vmState: running while QEMU answers (paused or not); stopped, its definition the caller's, with no socket or a dead one", async () => {
  expect(await driver.vmState('vm1')).toEqual({ running: true });
  expect(await driver.vmState('vm-none')).toEqual({ running: false, definition: 'caller' });
  // A socket file nobody listens on: a QEMU that died.
  fs.mkdirSync(path.join(runDir, 'vm-dead'), { recursive: true });
  const dead = net.createServer().listen(qmpSocketPath(runDir, 'vm-dead'));
  await new Promise((r) => dead.once('listening', r));
  await new Promise((r) => dead.close(r));
  fs.writeFileSync(qmpSocketPath(runDir, 'vm-dead'), '');
  expect(await driver.vmState('vm-dead')).toEqual({ running: false, definition: 'caller' });
  // Something that answers on the socket but not as QEMU: not known to be stopped, so no offline merge.
  fs.mkdirSync(path.join(runDir, 'vm-garbled'), { recursive: true });
  const garbled = net.createServer((c) => c.end('hello there\n')).listen(qmpSocketPath(runDir, 'vm-garbled'));
  await new Promise((r) => garbled.once('listening', r));
  try {
    await expect(driver.vmState('vm-garbled')).rejects.toMatchObject({ name: 'QmpProtocolError' });
  } finally {
    await new Promise((r) => garbled.close(r));
  }
  await expect(driver.definedActive('vm1')).rejects.toThrow(/kept by its caller/);
  await expect(driver.redefineActive('vm1')).rejects.toThrow(/kept by its caller/);
});

test("hypervisorPids: the QEMU listening on the VM's QMP socket, and no other process", async () => {
  expect(await driver.hypervisorPids('vm1')).toEqual([vm?.pid]);
});

test("nodesHolding: a volume's format node first, then its file node; none for a file QEMU does not hold", async () => {
  expect(await driver.nodesHolding('vm1', vol('v1'))).toEqual(['q-v1', 'f-v1']);
  expect(await driver.nodesHolding('vm1', loose())).toEqual(['q-loose', 'f-loose']);
  expect(await driver.nodesHolding('vm1', path.join(root, 'images', 'disk0', 'none.qcow2'))).toEqual([]);
});

test("releaseVolume: QEMU lets go of the volume's nodes, and of no other", async () => {
  const chains = await driver.readAllChains('vm1');
  await driver.releaseVolume('vm1', loose());
  expect(await driver.nodesHolding('vm1', loose())).toEqual([]);
  expect(await driver.nodesHolding('vm1', vol('v0'))).toEqual(['q-v0', 'f-v0']);
  expect(await driver.readAllChains('vm1')).toEqual(chains);
  await driver.releaseVolume('vm1', loose()); // again: nothing left to release
});

describe('flushNode: the reply of QEMU\'s `qemu-io <node> "flush"` decides', () => {
  test('a flush that succeeds: QEMU answers nothing', async () => {
    await expect(driver.flushNode('vm1', 'q-v2')).resolves.toBeUndefined();
    await expect(driver.flushNode('vm1', 'q-v0')).resolves.toBeUndefined();
  });

  test("a flush QEMU refuses is thrown with QEMU's words (its reply is text, not a QMP error)", async () => {
    await expect(driver.flushNode('vm1', 'q-none')).rejects.toThrow(
      new Error("flush of node q-none failed: Error: Cannot find device='' nor node-name='q-none'"),
    );
  });
});

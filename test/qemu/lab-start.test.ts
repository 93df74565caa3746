/**
 * A stopped lab VM started again from the volumes its caller names (lab/vm/start.ts): the chain
 * below each named volume, as the headers give it, is what QEMU opens; a volume another process
 * holds (QEMU's image locks) cannot be started from.
 */
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import {
  activeVolumePath,
  createLabVm,
  destroyLabVm,
  LabVmAlreadyRunningError,
  runningLabVmPid,
  startLabVm,
  stopLabVm,
  verifyLabVm,
} from '../../lab/vm';
import { volumePath } from '../../src/domain/layout';
import { until } from '../harness/until';

const run = promisify(execFile);
const REPO = path.resolve(__dirname, '..', '..');

/** The lab command's exit status and output. */
function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      path.join(REPO, 'node_modules', '.bin', 'tsx'),
      [path.join(REPO, 'lab', 'cli.ts'), ...args],
      { cwd: REPO, timeout: 60_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

describe('startLabVm (real QEMU)', () => {
  let tmp: string;
  let storageRoot: string;
  let runDir: string;
  const vmId = 'labstart';

  beforeAll(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'lab-start-'));
    storageRoot = path.join(tmp, 'storage');
    runDir = path.join(tmp, 'run');
    await createLabVm({ storageRoot, runDir, vmId, disks: 2, volumes: 3, guest: false });
  });

  afterAll(async () => {
    if (runDir) await destroyLabVm(runDir, vmId).catch(() => undefined);
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  });

  test('a disk or a volume the VM does not have is refused before QEMU starts', async () => {
    await stopLabVm(runDir, vmId);
    await expect(startLabVm(runDir, vmId, { activeVolumes: { disk9: 'd0v1' } })).rejects.toThrow(
      'lab VM labstart has no disk disk9',
    );
    await expect(startLabVm(runDir, vmId, { activeVolumes: { disk0: 'd0v7' } })).rejects.toThrow(
      /disk disk0 has no volume d0v7/,
    );
    expect(await runningLabVmPid(runDir, vmId)).toBeUndefined();
  });

  test('after an offline active commit, the VM starts from the base it names, and its data reads back', async () => {
    await stopLabVm(runDir, vmId);
    const dir = path.dirname(volumePath(storageRoot, 'disk0', 'd0v2'));
    // disk0's active layer d0v2 committed into d0v1 with the VM shut off; -d keeps d0v2 whole.
    await run('qemu-img', ['commit', '-q', '-d', '-b', path.join(dir, 'd0v1.qcow2'), path.join(dir, 'd0v2.qcow2')]);

    const { chains } = await startLabVm(runDir, vmId, { activeVolumes: { disk0: 'd0v1' } });
    expect(chains).toEqual({ disk0: ['d0v0', 'd0v1'], disk1: ['d1v0', 'd1v1', 'd1v2'] });
    expect(await activeVolumePath(runDir, vmId, 'disk0')).toBe(volumePath(storageRoot, 'disk0', 'd0v1'));
    const report = await verifyLabVm(runDir, vmId);
    expect(report.disks.map((d) => d.chain)).toEqual([
      ['d0v1', 'd0v0'],
      ['d1v2', 'd1v1', 'd1v0'],
    ]);
    // Every region, the one the committed top overwrote included, reads back its pattern through d0v1.
    expect(report.ok).toBe(true);

    await expect(startLabVm(runDir, vmId)).rejects.toBeInstanceOf(LabVmAlreadyRunningError);
  });

  test('a volume another process holds open for writing cannot be started from: QEMU refuses the lock', async () => {
    await stopLabVm(runDir, vmId);
    const held = volumePath(storageRoot, 'disk1', 'd1v2');
    const refusal = (): Promise<string> =>
      run('qemu-img', ['info', held]).then(
        () => '',
        (err: Error) => err.message,
      );
    // Nobody holds it first (the stopped VM's QEMU let go): a refusal below is the holder's alone.
    await until(async () => (await refusal()) === '', 10_000);
    // qemu-io takes QEMU's write lock on the image and holds it while it waits for commands.
    const holder = spawn('qemu-io', ['-f', 'qcow2', held], { stdio: ['pipe', 'ignore', 'pipe'] });
    let holderErr = '';
    holder.stderr.on('data', (d: Buffer) => (holderErr += d.toString()));
    const exited = new Promise((r) => holder.once('exit', r));
    try {
      // Held once qemu-img, which takes a shared lock to read the header, is refused while the holder runs.
      await until(async () => {
        if (holder.exitCode !== null || holder.signalCode !== null)
          throw new Error(`qemu-io ended before it held the image: ${holderErr}`);
        return /lock/i.test(await refusal());
      }, 10_000);
      await expect(startLabVm(runDir, vmId)).rejects.toThrow(/Failed to get "write" lock/);
      expect([holder.exitCode, holder.signalCode]).toEqual([null, null]);
      expect(await runningLabVmPid(runDir, vmId)).toBeUndefined();
    } finally {
      holder.kill('SIGKILL');
      await exited;
    }
    await startLabVm(runDir, vmId);
    expect(await activeVolumePath(runDir, vmId, 'disk1')).toBe(held);
  });

  test("the CLI: start prints each disk's chain; --active out of place or malformed is a usage error", async () => {
    await stopLabVm(runDir, vmId);
    const misplaced = await cli(['create', '--vm-id', 'x', '--active', 'disk0=d0v1', '--run-dir', runDir]);
    expect(misplaced.code).toBe(2);
    expect(misplaced.stderr).toContain('--active only applies to start');
    const malformed = await cli(['start', '--vm-id', vmId, '--active', 'disk0', '--run-dir', runDir]);
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toContain('--active: must be DISK=VOLUME');

    const started = await cli(['start', '--vm-id', vmId, '--active', 'disk0=d0v1', '--run-dir', runDir, '--json']);
    expect(started.stderr).toBe('');
    expect(started.code).toBe(0);
    expect(JSON.parse(started.stdout)).toMatchObject({
      vmId,
      chains: { disk0: ['d0v0', 'd0v1'], disk1: ['d1v0', 'd1v1', 'd1v2'] },
    });
    expect(await activeVolumePath(runDir, vmId, 'disk0')).toBe(volumePath(storageRoot, 'disk0', 'd0v1'));
  });
});

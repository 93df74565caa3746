import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

import { z } from 'zod';

import {
  activeVolumePath,
  auxQmpCommand,
  checkRegion,
  createLabVm,
  destroyLabVm,
  formatNodeName,
  type LabVm,
  LabVmAlreadyRunningError,
  readHeaderChain,
  readLabVm,
  runningLabVmPid,
  stopLabVm,
  verifyLabVm,
} from '../../lab/vm';
import { procStatFields } from '../../lab/vm/proc-stat';
import { vmRunDir, volumePath } from '../../src/domain/layout';

const REPO = path.resolve(__dirname, '..', '..');
const TSX = path.join(REPO, 'node_modules', '.bin', 'tsx');
const CLI = path.join(REPO, 'lab', 'cli.ts');

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(TSX, [CLI, ...args], { cwd: REPO, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const jobsSchema = z.array(z.looseObject({ device: z.string(), status: z.string() }));

async function jobs(runDir: string, vmId: string): Promise<z.infer<typeof jobsSchema>> {
  return jobsSchema.parse(await auxQmpCommand(runDir, vmId, 'query-block-jobs'));
}

async function waitFor(what: string, cond: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether the process runs; a zombie (exited, not yet reaped by its parent) counts as gone. */
function alive(pid: number): boolean {
  const fields = procStatFields(pid);
  return fields !== undefined && fields[0] !== 'Z';
}

describe('lab VM (real QEMU)', () => {
  let tmp: string;
  let storageRoot: string;
  let runDir: string;
  const vmId = 'labtest';
  let vm: LabVm;

  beforeAll(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'lab-test-'));
    storageRoot = path.join(tmp, 'storage');
    runDir = path.join(tmp, 'run');
    vm = await createLabVm({ storageRoot, runDir, vmId, disks: 2, volumes: 3, guest: false });
  });

  afterAll(async () => {
    if (runDir) await destroyLabVm(runDir, vmId).catch(() => undefined);
    if (runDir) await destroyLabVm(runDir, 'clivm').catch(() => undefined);
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  });

  test('records a manifest with distinct patterns and the region layout', async () => {
    expect(await readLabVm(runDir, vmId)).toEqual(vm);
    expect(vm.disks.map((d) => d.diskId)).toEqual(['disk0', 'disk1']);
    expect(vm.disks[0].volumeIds).toEqual(['d0v0', 'd0v1', 'd0v2']);
    const R = 1024 * 1024;
    expect(vm.disks[0].regions).toEqual([
      { kind: 'layer', layer: 0, offset: 0, length: R, pattern: 0x10 },
      { kind: 'layer', layer: 1, offset: R, length: R, pattern: 0x11 },
      { kind: 'layer', layer: 2, offset: 2 * R, length: R, pattern: 0x12 },
      { kind: 'overwrite', layer: 2, offset: 3 * R, length: R, pattern: 0x12 },
    ]);
    const patterns = vm.disks.flatMap((d) => d.regions.filter((r) => r.kind === 'layer').map((r) => r.pattern));
    expect(new Set(patterns).size).toBe(6);
    expect(patterns).not.toContain(0);
    expect(await runningLabVmPid(runDir, vmId)).toBe(vm.pid);
  });

  test('each disk runs on a 3-volume chain, active layer on top, base last', async () => {
    for (const [d, disk] of vm.disks.entries()) {
      const active = await activeVolumePath(runDir, vmId, disk.diskId);
      expect(active).toBe(volumePath(storageRoot, disk.diskId, `d${d}v2`));
      expect(await readHeaderChain(active)).toEqual(
        [2, 1, 0].map((i) => volumePath(storageRoot, disk.diskId, `d${d}v${i}`)),
      );
    }
  });

  test('verify passes on the fresh VM', async () => {
    const report = await verifyLabVm(runDir, vmId);
    expect(report.ok).toBe(true);
    expect(report.disks.map((d) => d.chain)).toEqual([
      ['d0v2', 'd0v1', 'd0v0'],
      ['d1v2', 'd1v1', 'd1v0'],
    ]);
    expect(report.disks.map((d) => d.qemuChain)).toEqual(report.disks.map((d) => d.chain));
    for (const d of report.disks) expect(d.regions.every((r) => r.ok)).toBe(true);
  });

  test('a wrong pattern is reported, not passed', async () => {
    const active = await activeVolumePath(runDir, vmId, 'disk0');
    const wrong = await checkRegion(active, { offset: 0, length: 1024 * 1024, pattern: 0x11 });
    expect(wrong.ok).toBe(false);
    expect(wrong.detail).toMatch(/Pattern verification failed/);
    // The overwrite region shows the top layer only, not a lower one.
    const lower = await checkRegion(active, { offset: 3 * 1024 * 1024, length: 1024 * 1024, pattern: 0x10 });
    expect(lower.ok).toBe(false);
    // And through verifyLabVm: a manifest expecting something else fails.
    const file = path.join(vmRunDir(runDir, vmId), 'lab.json');
    const original = await fs.readFile(file, 'utf8');
    const tampered = JSON.parse(original) as LabVm;
    tampered.disks[1].regions[1].pattern = 0x77;
    await fs.writeFile(file, JSON.stringify(tampered));
    try {
      const report = await verifyLabVm(runDir, vmId);
      expect(report.ok).toBe(false);
      expect(report.disks[0].ok).toBe(true);
      expect(report.disks[1].regions.map((r) => r.ok)).toEqual([true, false, true, true]);
      // Wrong data, not stale data: a flush does not make it pass.
      expect(report.disks[1].regions[1].staleOnDisk).toBeUndefined();
      expect(report.disks[1].regions[1].detail).toMatch(/Pattern verification failed/);
    } finally {
      await fs.writeFile(file, original);
    }
  });

  test('creating the same VM again while it runs fails clearly', async () => {
    const again = createLabVm({ storageRoot, runDir, vmId, disks: 1, volumes: 2, guest: false });
    await expect(again).rejects.toThrow(LabVmAlreadyRunningError);
    await expect(createLabVm({ storageRoot, runDir, vmId, disks: 1, volumes: 2, guest: false })).rejects.toThrow(
      /already running \(pid \d+\)/,
    );
    // Untouched: still the same QEMU and data.
    expect(await runningLabVmPid(runDir, vmId)).toBe(vm.pid);
    expect((await verifyLabVm(runDir, vmId)).ok).toBe(true);
  });

  test('verify passes after real commits, on a shorter chain', async () => {
    const top = formatNodeName('d0v2');
    // Intermediate commit d0v1 → d0v0: finishes by itself.
    await auxQmpCommand(runDir, vmId, 'block-commit', {
      'job-id': 'labtest-mid',
      device: top,
      'top-node': formatNodeName('d0v1'),
      'base-node': formatNodeName('d0v0'),
      'backing-file': 'd0v0.qcow2',
    });
    await waitFor('the intermediate commit', async () => (await jobs(runDir, vmId)).length === 0);
    // Backing layers are opened read-only (as libvirt does): the commit reopens the base
    // read-write and then read-only again, and that reopen flushes the base's qcow2 metadata, so
    // the files alone already show the committed data, with no flush of ours.
    const report = await verifyLabVm(runDir, vmId);
    expect(report.disks[0].chain).toEqual(['d0v2', 'd0v0']);
    expect(report.disks[0].chainOk).toBe(true);
    expect(report.disks[0].regions.map((r) => r.ok)).toEqual([true, true, true, true]);
    expect(report.ok).toBe(true);
    expect((await verifyLabVm(runDir, vmId, { flush: true })).ok).toBe(true);

    // Active commit d0v2 → d0v0: ready, then the pivot.
    await auxQmpCommand(runDir, vmId, 'block-commit', {
      'job-id': 'labtest-act',
      device: top,
      'top-node': top,
      'base-node': formatNodeName('d0v0'),
    });
    await waitFor('the active commit to be ready', async () =>
      (await jobs(runDir, vmId)).some((j) => j.status === 'ready'),
    );
    await auxQmpCommand(runDir, vmId, 'block-job-complete', { device: 'labtest-act' });
    await waitFor('the pivot', async () => (await jobs(runDir, vmId)).length === 0);
    expect(await activeVolumePath(runDir, vmId, 'disk0')).toBe(volumePath(storageRoot, 'disk0', 'd0v0'));
    // The active commit (a mirror) flushes the base before the pivot: verify passes without a flush.
    const afterPivot = await verifyLabVm(runDir, vmId);
    expect(afterPivot.disks[0].chain).toEqual(['d0v0']);
    expect(afterPivot.disks[1].chain).toEqual(['d1v2', 'd1v1', 'd1v0']);
    expect(afterPivot.ok).toBe(true);
  });

  test('the CLI: bad flags exit 2 naming the flag; a VM it creates outlives it', async () => {
    const bad = await cli(['create', '--vm-id', 'clivm', '--disks', 'two', '--run-dir', runDir]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--disks/);
    const misplaced = await cli(['verify', '--vm-id', vmId, '--volumes', '3', '--run-dir', runDir]);
    expect(misplaced.code).toBe(2);
    expect(misplaced.stderr).toMatch(/--volumes/);

    const cliStorage = path.join(tmp, 'cli-storage');
    const created = await cli([
      'create',
      '--vm-id',
      'clivm',
      '--disks',
      '1',
      '--volumes',
      '2',
      '--paused',
      '--storage-root',
      cliStorage,
      '--run-dir',
      runDir,
      '--json',
    ]);
    expect(created).toMatchObject({ code: 0 });
    const made = JSON.parse(created.stdout) as LabVm;
    expect(alive(made.pid)).toBe(true);
    const verified = await cli(['verify', '--vm-id', 'clivm', '--run-dir', runDir, '--json']);
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({
      ok: true,
      disks: [{ diskId: 'disk0', chain: ['d0v1', 'd0v0'] }],
    });

    const destroyed = await cli(['destroy', '--vm-id', 'clivm', '--run-dir', runDir]);
    expect(destroyed.code).toBe(0);
    expect(alive(made.pid)).toBe(false);
    await expect(fs.access(path.join(cliStorage, 'images', 'disk0'))).rejects.toThrow();
    await expect(fs.access(vmRunDir(runDir, 'clivm'))).rejects.toThrow();
    const gone = await cli(['verify', '--vm-id', 'clivm', '--run-dir', runDir]);
    expect(gone.code).toBe(1);
  });

  test('stop is idempotent, and destroy removes images and run dir', async () => {
    await stopLabVm(runDir, vmId);
    expect(alive(vm.pid)).toBe(false);
    expect(await runningLabVmPid(runDir, vmId)).toBeUndefined();
    await stopLabVm(runDir, vmId);
    await destroyLabVm(runDir, vmId);
    await destroyLabVm(runDir, vmId);
    await expect(fs.access(path.join(storageRoot, 'images', 'disk0'))).rejects.toThrow();
    await expect(fs.access(vmRunDir(runDir, vmId))).rejects.toThrow();
  });
});

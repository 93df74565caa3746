/**
 * A VM killed a moment ago: the kernel drops its QEMU's image locks in deferred work after the
 * process's fds are gone, so for a few milliseconds (longer on a busy host) /proc/locks lists
 * locks on the volumes that no process holds. The guard of a stopped VM's volumes waits for them;
 * locks that stay are refused. Real qcow2 images, and a fake /proc whose `locks` the test rewrites
 * (the moment the kernel drops them cannot be held open on a real one).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { HostDeps } from '../../src/activities/deps';
import { guardCommit, guardDelete } from '../../src/activities/volume-guard';
import { STOPPED_VM_LOCKS_SETTLE_MS } from '../../src/config/policy';
import { volumePath } from '../../src/domain/layout';
import type { DiskChain } from '../../src/drivers/driver';
import { QmpDriver } from '../../src/drivers/qmp/qmp-driver';
import { Reclaimer } from '../../src/storage/reclaim';
import { VolumeUsage } from '../../src/volume-users';
import { devMajorMinor } from '../../src/volume-users/file-id';
import { failureOf } from '../harness/failure';

jest.setTimeout(30_000);
const run = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

let dir: string;
let root: string;
let proc: string;
let deps: HostDeps;
const vol = (id: string): string => volumePath(root, 'd1', id);
const chain = (): DiskChain => ({
  diskId: 'd1',
  rootNode: 'top',
  volumes: ['v2', 'v1', 'v0'].map((id) => ({ path: vol(id), nodeName: `q-${id}` })),
});

/** `file` as /proc/locks names it: `major:minor:inode`. */
function lockedFile(file: string): string {
  const st = fs.statSync(file, { bigint: true });
  const { major, minor } = devMajorMinor(st.dev);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
}

/** QEMU's shared-read locks on `file` as /proc/locks prints a killed QEMU's: pid -1, no fd anywhere. */
function orphanLocks(file: string): string {
  const id = lockedFile(file);
  return [100, 201, 203].map((b, i) => `${i + 1}: OFDLCK ADVISORY  READ -1 ${id} ${b} ${b}\n`).join('');
}

/** Rewritten in place: the guard keeps an fd on it and reads it at offset 0 each time. */
const setLocks = (text: string): void => fs.writeFileSync(path.join(proc, 'locks'), text);

beforeEach(async () => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'stopped-locks-')));
  root = path.join(dir, 'storage');
  proc = path.join(dir, 'proc');
  fs.mkdirSync(path.join(root, 'images', 'd1'), { recursive: true });
  fs.mkdirSync(path.join(proc, 'net'), { recursive: true });
  fs.writeFileSync(path.join(proc, 'net', 'unix'), '');
  setLocks('');
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', vol('v0'), '16M']);
  for (const [id, backing] of [
    ['v1', 'v0'],
    ['v2', 'v1'],
  ])
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', `${backing}.qcow2`, vol(id)]);
  deps = {
    hostId: 'h1',
    storageRoot: root,
    runDir: path.join(dir, 'run'),
    driver: new QmpDriver(path.join(dir, 'run')),
    reclaimer: new Reclaimer(root),
    usage: new VolumeUsage(root, { procRoot: proc }),
  };
});

afterEach(async () => {
  deps.usage.close();
  await deps.driver.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe("a stopped VM's volumes, locks of a killed QEMU still listed", () => {
  test('the commit guard waits until the kernel drops them, then passes', async () => {
    setLocks(orphanLocks(vol('v0')) + orphanLocks(vol('v1')));
    const guarded = guardCommit(deps, 'vm1', chain(), 1, 2, true);
    let settled = false;
    void guarded.then(
      () => (settled = true),
      () => (settled = true),
    );
    await sleep(300);
    expect(settled).toBe(false);
    setLocks('');
    await expect(guarded).resolves.toBeUndefined();
  });

  test('the delete guard waits for them too', async () => {
    setLocks(orphanLocks(vol('v2')));
    const guarded = guardDelete(deps, 'vm1', vol('v2'), 'd1', true);
    await sleep(300);
    setLocks('');
    await expect(guarded).resolves.toBeUndefined();
  });

  test(`locks that stay past ${STOPPED_VM_LOCKS_SETTLE_MS} ms are refused: BaseShared, nothing touched`, async () => {
    setLocks(orphanLocks(vol('v0')));
    const before = fs.statSync(vol('v0')).mtimeMs;
    const f = await failureOf(guardCommit(deps, 'vm1', chain(), 1, 2, true));
    expect(f.type).toBe('BaseShared');
    expect(f.message).toBe(
      'base volume v0 of disk d1 is used outside its chain: a process not visible here holds locks on it ' +
        '(OFDLCK READ 100-100, OFDLCK READ 201-201, OFDLCK READ 203-203); nothing was touched',
    );
    expect(fs.statSync(vol('v0')).mtimeMs).toBe(before);
  });

  test('another user beside them is refused at once: nothing to wait for', async () => {
    setLocks(orphanLocks(vol('v0')));
    await run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-F',
      'qcow2',
      '-b',
      vol('v0'),
      path.join(root, 'clone.qcow2'),
    ]);
    const t0 = Date.now();
    const f = await failureOf(guardCommit(deps, 'vm1', chain(), 1, 2, true));
    expect(f.type).toBe('BaseShared');
    expect(f.message).toContain('it is the backing file of');
    expect(f.message).toContain('a process not visible here holds locks');
    expect(Date.now() - t0).toBeLessThan(STOPPED_VM_LOCKS_SETTLE_MS);
  });
  test('no lock and no user at all: passes at once, nothing to wait for', async () => {
    const t0 = Date.now();
    await expect(guardCommit(deps, 'vm1', chain(), 1, 2, true)).resolves.toBeUndefined();
    expect(Date.now() - t0).toBeLessThan(STOPPED_VM_LOCKS_SETTLE_MS);
  });

  test('a POSIX lock the kernel names a pid for is refused at once: a process frees those as it closes its files', async () => {
    setLocks(`1: POSIX  ADVISORY  WRITE 999999 ${lockedFile(vol('v0'))} 0 EOF\n`);
    const t0 = Date.now();
    const f = await failureOf(guardCommit(deps, 'vm1', chain(), 1, 2, true));
    expect(f.message).toContain('process 999999 holds locks on it (POSIX WRITE 0-EOF)');
    expect(Date.now() - t0).toBeLessThan(STOPPED_VM_LOCKS_SETTLE_MS);
  });
});

describe('a running VM', () => {
  test('locks no visible process holds are refused at once: only a stopped VM leaves such locks behind', async () => {
    setLocks(orphanLocks(vol('v0')));
    const t0 = Date.now();
    const f = await failureOf(guardCommit(deps, 'vm1', chain(), 1, 2, false));
    expect(f.type).toBe('BaseShared');
    expect(Date.now() - t0).toBeLessThan(STOPPED_VM_LOCKS_SETTLE_MS);
  });
});

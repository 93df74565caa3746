/**
 * Lab VMs running the lab guest (Debian's cloud kernel, the writer of lab/guest/writer.c) and the
 * check that nothing the guest was told is written got lost. Each guest takes most of a core under
 * TCG: test/guest/ runs in band, one file and one test at a time (scripts/test.sh), and each test
 * boots one guest.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  checkGuestWrites,
  ensureGuestArtifacts,
  type GuestCheckReport,
  readAckLog,
  waitForGuestAcks,
} from '../../lab/guest';
import { createLabVm, destroyLabVm, type LabVm, runningLabVmPid, stopLabVm } from '../../lab/vm';
import { runOk } from '../../lab/vm/processes';
import { volumePath } from '../../src/domain/layout';

jest.setTimeout(180_000);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Whether the process runs; a zombie counts as gone. */
async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function summary(r: GuestCheckReport): string {
  return r.disks
    .map((d) => `${d.diskId}: ${d.acknowledged} acked, ${d.found}/${d.offsetsAcknowledged} offsets found`)
    .join('; ');
}

describe('lab guest (real QEMU, a running guest OS)', () => {
  let tmp: string;
  let runDir: string;
  let storageRoot: string;
  /** Every QEMU a test started, killed by pid afterwards whatever happened. */
  const pids: number[] = [];
  const vmIds: string[] = [];

  beforeAll(async () => {
    // Builds the guest the first time on this machine (about 10 s); later only finds it.
    await ensureGuestArtifacts();
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'guest-test-'));
    runDir = path.join(tmp, 'run');
    storageRoot = path.join(tmp, 'storage');
  }, 300_000);

  afterEach(async () => {
    for (const pid of pids.splice(0)) {
      if (await alive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    for (const vmId of vmIds.splice(0)) await destroyLabVm(runDir, vmId).catch(() => undefined);
  });

  afterAll(async () => {
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  });

  async function bootGuest(vmId: string, guest: { regionMiB?: number; rate?: number } = {}): Promise<LabVm> {
    vmIds.push(vmId);
    const vm = await createLabVm({
      storageRoot,
      runDir,
      vmId,
      idPrefix: `${vmId}-`,
      disks: 2,
      volumes: 2,
      guest,
    });
    pids.push(vm.pid);
    return vm;
  }

  test('a 2-disk guest writes, stops cleanly, and every acknowledged write is on its disk', async () => {
    // A 4 MiB region (1024 slots of 4 KiB): later writes land on earlier ones within seconds.
    const vm = await bootGuest('gclean', { regionMiB: 4 });
    const g = vm.guest;
    if (!g) throw new Error('no guest in the manifest');
    expect(g.regionOffset).toBe(3 * 1024 * 1024); // after the pattern regions: 2 layers + overwrite, 1 MiB each
    expect(g.regionLength).toBe(4 * 1024 * 1024);
    await waitForGuestAcks(g.ackLog, 200, { alive: () => alive(vm.pid) });
    await sleep(3_000);

    expect(await stopLabVm(runDir, vm.vmId)).toBe('guest-powered-off');
    expect(await runningLabVmPid(runDir, vm.vmId)).toBeUndefined();
    const log = await readAckLog(g.ackLog);
    expect(log.lines.filter((l) => l.kind === 'DONE')).toHaveLength(2);

    const report = await checkGuestWrites(runDir, vm.vmId);
    console.log(`clean stop: ${summary(report)}`);
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.stoppedCleanly).toBe(true);
    for (const d of report.disks) {
      expect(d.acknowledged).toBeGreaterThan(0);
      expect(d.found).toBe(d.offsetsAcknowledged);
      expect(d.lost).toBe(0);
      expect(d.foundLater).toBe(0); // a clean stop reports every write
      expect(d.doneWrites).toBe(d.lastAckedSeq);
      expect(d.offsetsAcknowledged).toBeLessThan(d.acknowledged); // overwrites happened
      expect(d.records).toBe(d.offsetsAcknowledged);
      expect(d.chain).toEqual([`${vm.vmId}-d${d.index}v1`, `${vm.vmId}-d${d.index}v0`]);
      expect(d.imageChecks.map((c) => c.ok)).toEqual([true, true]);
    }
  });

  test('the check fails when an acknowledged record or a pattern region is damaged on the host', async () => {
    const vm = await bootGuest('gbad', { regionMiB: 4 });
    const g = vm.guest;
    if (!g) throw new Error('no guest in the manifest');
    await waitForGuestAcks(g.ackLog, 200, { alive: () => alive(vm.pid) });
    expect(await stopLabVm(runDir, vm.vmId)).toBe('guest-powered-off');
    expect((await checkGuestWrites(runDir, vm.vmId)).ok).toBe(true);

    // Disk 1's last acknowledged record: 512 bytes in its middle overwritten in the active volume.
    const log = await readAckLog(g.ackLog);
    const last = log.lines.filter((l) => l.kind === 'ACK' && l.disk === 1).pop();
    if (last?.kind !== 'ACK') throw new Error('no ACK for disk 1');
    const disk1 = vm.disks[1];
    const active = volumePath(storageRoot, disk1.diskId, disk1.volumeIds[1]);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', `write -P 0x5a ${last.offset + 1024} 512`, active]);
    // And one byte of disk 0's base layer region, in the base volume.
    const base0 = volumePath(storageRoot, vm.disks[0].diskId, vm.disks[0].volumeIds[0]);
    await runOk('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x00 4096 512', base0]);

    const report = await checkGuestWrites(runDir, vm.vmId);
    console.log(`damaged: ${summary(report)}; problems: ${report.problems.map((p) => p.detail).join(' | ')}`);
    expect(report.ok).toBe(false);
    expect(report.problems).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ kind: 'bad-checksum', diskId: disk1.diskId, offset: last.offset }),
        expect.objectContaining({ kind: 'lost-write', diskId: disk1.diskId, offset: last.offset }),
        expect.objectContaining({ kind: 'pattern', diskId: vm.disks[0].diskId, offset: 4096 }),
      ]),
    );
    expect(report.problems).toHaveLength(3);
    expect(report.disks[1].lost).toBe(1);
    expect(report.disks[1].found).toBe(report.disks[1].offsetsAcknowledged - 1);
    expect(report.disks[0].lost).toBe(0);
  });

  test('a guest whose QEMU is killed (SIGKILL) mid-write loses no acknowledged write', async () => {
    // The default region: the rest of the 64 MiB disk (61 MiB).
    const vm = await bootGuest('gkill');
    const g = vm.guest;
    if (!g) throw new Error('no guest in the manifest');
    expect(g.regionLength).toBe(61 * 1024 * 1024);
    await waitForGuestAcks(g.ackLog, 500, { alive: () => alive(vm.pid) });
    await sleep(1_000);
    process.kill(vm.pid, 'SIGKILL');
    for (let i = 0; i < 100 && (await alive(vm.pid)); i++) await sleep(50);
    expect(await alive(vm.pid)).toBe(false);

    const report = await checkGuestWrites(runDir, vm.vmId);
    console.log(`SIGKILL: ${summary(report)}`);
    expect(report.problems).toEqual([]);
    expect(report.ok).toBe(true);
    expect(report.stoppedCleanly).toBe(false);
    for (const d of report.disks) {
      expect(d.acknowledged).toBeGreaterThan(0);
      expect(d.found).toBe(d.offsetsAcknowledged);
      expect(d.lost).toBe(0);
    }
    // QEMU left its pid file and sockets; stop cleans them up and finds nothing running.
    expect(await stopLabVm(runDir, vm.vmId)).toBe('not-running');
  });
});

/**
 * Lab VMs whose guest writes through a merge, for the tests of test/guest/ (run one file at a time,
 * one guest at a time: see jest.config.js). Each VM has 2 disks × 3 volumes of 8 MiB of lab data
 * per layer and a guest writing 4 KiB records to a 4 MiB region of each disk, at a rate an active
 * commit limited to 4 MiB/s converges under (DESIGN rule 11: each write dirties a 64 KiB cluster).
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { checkGuestWrites, type GuestCheckReport, readAckLog } from '../../lab/guest';
import { createLabVm, destroyLabVm, type LabVm, runningLabVmPid, stopLabVm } from '../../lab/vm';

export const MiB = 1024 * 1024;
/** Lab data per layer: a top holds 16 MiB (its layer region and the overwrite region). */
export const LAYER_MIB = 8;
/** The block jobs' speed limit: 16 MiB take about 4 s, so the guest writes through the job. */
export const BANDWIDTH = 4 * MiB;
/** Writes per second over both disks: at most 1.25 MiB/s of 64 KiB clusters dirtied per disk, well under BANDWIDTH. */
export const GUEST_RATE = 40;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Whether the process runs; a zombie counts as gone. */
export async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** The guest VMs a test file made: each QEMU killed by pid and each VM destroyed in afterEach. */
export class GuestVms {
  private readonly pids: number[] = [];
  private readonly vmIds: string[] = [];

  constructor(private readonly where: () => { storageRoot: string; runDir: string }) {}

  async create(vmId: string, disks = 2): Promise<LabVm> {
    this.vmIds.push(vmId);
    const { storageRoot, runDir } = this.where();
    const vm = await createLabVm({
      storageRoot,
      runDir,
      vmId,
      disks,
      volumes: 3,
      layerDataMiB: LAYER_MIB,
      sizeMiB: 4 * LAYER_MIB + 4,
      guest: { rate: GUEST_RATE, regionMiB: 4 },
    });
    this.pids.push(vm.pid);
    return vm;
  }

  async cleanup(): Promise<void> {
    for (const pid of this.pids.splice(0)) {
      if (await alive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone meanwhile
        }
      }
    }
    const { runDir } = this.where();
    for (const vmId of this.vmIds.splice(0)) await destroyLabVm(runDir, vmId).catch(() => undefined);
  }
}

/** ACK lines per disk so far. */
export async function acksPerDisk(vm: LabVm): Promise<number[]> {
  const counts = vm.disks.map(() => 0);
  for (const l of (await readAckLog(vm.guest!.ackLog)).lines) if (l.kind === 'ACK') counts[l.disk]++;
  return counts;
}

/**
 * Resolves once the guest acknowledged `atLeast` writes on every disk (or `atLeast[i]` on disk i);
 * fails if its QEMU ends first.
 */
export async function waitForWrites(vm: LabVm, atLeast: number | number[] = 3, timeoutMs = 60_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  const want = (i: number): number => (typeof atLeast === 'number' ? atLeast : atLeast[i]);
  for (;;) {
    const counts = await acksPerDisk(vm);
    if (counts.every((n, i) => n >= want(i))) return counts;
    if (!(await alive(vm.pid))) throw new Error(`the guest's QEMU ended with ACKs ${counts.join(', ')}`);
    if (Date.now() > deadline) throw new Error(`the guest wrote only ${counts.join(', ')} records per disk`);
    await sleep(100);
  }
}

/**
 * Stops the guest (it flushes, reports DONE and powers off) unless its QEMU is gone already, runs
 * the check, and expects zero lost acknowledged writes, writes on every disk, the layer patterns
 * intact and every volume clean. `duringMerge`: the ACKs per disk between the merge's start and end.
 */
export async function stopAndCheck(
  scenario: string,
  runDir: string,
  vm: LabVm,
  duringMerge: number[],
  options: { killed?: boolean; activeVolumes?: Record<string, string> } = {},
): Promise<GuestCheckReport> {
  if (options.killed) expect(await runningLabVmPid(runDir, vm.vmId)).toBeUndefined();
  else expect(await stopLabVm(runDir, vm.vmId)).toBe('guest-powered-off');
  const report = await checkGuestWrites(runDir, vm.vmId, { activeVolumes: options.activeVolumes });
  expectGuestWritesKept(scenario, report, duringMerge, !options.killed);
  return report;
}

/** Records the report and expects no acknowledged write lost, writes on every disk during the merge, and a clean stop unless killed. */
export function expectGuestWritesKept(
  scenario: string,
  report: GuestCheckReport,
  duringMerge: number[],
  stoppedCleanly: boolean,
): void {
  recordGuestWrites(scenario, report, duringMerge);
  expect(report.problems).toEqual([]);
  expect(report.ok).toBe(true);
  expect(report.stoppedCleanly).toBe(stoppedCleanly);
  for (const d of report.disks) {
    expect(d.acknowledged).toBeGreaterThan(0);
    expect(d.lost).toBe(0);
    expect(d.found).toBe(d.offsetsAcknowledged);
  }
  // The guest wrote to every disk while the merge ran.
  for (const n of duringMerge) expect(n).toBeGreaterThan(0);
}

/** One line per test in test-artifacts/guest-writes.jsonl and on the console: what was acknowledged and found. */
export function recordGuestWrites(scenario: string, report: GuestCheckReport, duringMerge: number[]): void {
  const disks = report.disks.map((d, i) => ({
    diskId: d.diskId,
    chain: d.chain,
    acknowledged: d.acknowledged,
    duringMerge: duringMerge[i],
    offsetsAcknowledged: d.offsetsAcknowledged,
    found: d.found,
    lost: d.lost,
  }));
  const dir = path.resolve(__dirname, '../../test-artifacts');
  mkdirSync(dir, { recursive: true });
  appendFileSync(
    path.join(dir, 'guest-writes.jsonl'),
    `${JSON.stringify({ scenario, ok: report.ok, disks, at: new Date().toISOString() })}\n`,
  );
  console.log(
    `${scenario}: ${disks
      .map(
        (d) =>
          `${d.diskId} ${d.acknowledged} acked (${d.duringMerge} during the merge), ${d.found}/${d.offsetsAcknowledged} offsets found, ${d.lost} lost`,
      )
      .join('; ')}`,
  );
}

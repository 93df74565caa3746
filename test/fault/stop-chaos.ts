/**
 * The chaos run's `qemu` mode: merges of active and intermediate commits on VMs whose guest writes
 * throughout, each VM's QEMU SIGKILLed at a random moment of its merge (mid-job, in ready, around
 * the pivot, or after the end). Each merge must finish (offline when the VM died first) and name
 * the volume each disk starts from; the check then finds every write the guest acknowledged in
 * that chain, every volume is clean, only the tops are gone, and the VM starts from the volumes
 * named. A pivot whose outcome cannot be told (PivotOutcomeUnknown) must keep both volumes, one of
 * which holds every acknowledged write. The seed is printed; the same seed replays the same plan.
 *
 *   npx tsx test/fault/chaos.ts --mode qemu --merges 30 --seed 7 [--parallel 2]
 */
import { existsSync } from 'node:fs';

import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';

import { checkGuestWrites, checkImage, type GuestCheckReport } from '../../lab/guest';
import { destroyLabVm, startLabVm, stopLabVm, verifyLabVm } from '../../lab/vm';
import { volumePath } from '../../src/domain/layout';
import type { DiskOutcome, LiveMergeResult } from '../../src/domain/outcome';
import { FaultStack } from '../harness/process-stack';
import { mergeRequest, MiB, startMerge } from '../harness/scenario';
import { chaosVm } from './chaos-vm';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface StopChaosOptions {
  merges: number;
  seed: number;
  parallel: number;
  random: () => number;
  log: (line: string) => void;
}

/** How one disk ended: finished offline, merged live (QEMU died after the merge), both kept, or broken. */
export interface StoppedDiskVerdict {
  snapshotId: string;
  diskId: string;
  kind: 'intermediate' | 'active';
  killAtMs: number;
  state: 'offline' | 'live' | 'keptBoth' | 'BROKEN';
  topStale?: boolean;
  activeVolumeId?: string;
  detail?: string;
  /** Leaked clusters in the disk's volumes (a killed QEMU's: wasted space, no data lost). */
  leakedClusters?: number;
  guest: { acknowledged: number; offsetsAcknowledged: number; found: number; lost: number };
}

export interface StopChaosReport {
  seed: number;
  merges: number;
  disks: StoppedDiskVerdict[];
  ok: boolean;
  durationMs: number;
}

export async function runStopChaos(opts: StopChaosOptions): Promise<StopChaosReport> {
  const started = Date.now();
  const stack = await new FaultStack().start();
  const disks: StoppedDiskVerdict[] = [];
  // The plan of each merge is drawn up front, so the seed fixes it whatever the timing.
  const plans = Array.from({ length: opts.merges }, (_, i) => ({
    index: i,
    disks: 1 + Math.floor(opts.random() * 2),
    kinds: [opts.random() < 0.5 ? 'intermediate' : 'active', opts.random() < 0.6 ? 'active' : 'intermediate'] as Array<
      'intermediate' | 'active'
    >,
    bandwidthMiB: 2 + Math.floor(opts.random() * 3),
    /** Of the job's expected time: a top holds about 8 MiB, so its job takes 2 to 4 s. */
    killAt: opts.random() * 1.15,
  })).map((p) => ({ ...p, killAtMs: Math.round((p.killAt * 8 * 1000) / p.bandwidthMiB) }));

  async function one(plan: (typeof plans)[number]): Promise<void> {
    const vm = await chaosVm(stack, 'stop', plan.index, plan.disks);
    try {
      const kinds = plan.kinds.slice(0, plan.disks);
      const request = mergeRequest(vm, `stop-chaos-${opts.seed}-${plan.index}`, kinds, {
        bandwidthBytesPerSec: plan.bandwidthMiB * MiB,
      });
      const handle = await startMerge(stack, request);
      await sleep(plan.killAtMs);
      process.kill(vm.pid, 'SIGKILL');
      let result: LiveMergeResult | undefined;
      let failed: DiskOutcome[] = [];
      let failure = '';
      try {
        result = await handle.result();
      } catch (err) {
        failure = err instanceof WorkflowFailedError ? String(err.cause?.message) : String(err);
        // DiskMergeFailed carries each disk's outcome.
        const cause = err instanceof WorkflowFailedError ? err.cause : undefined;
        if (cause instanceof ApplicationFailure) failed = (cause.details?.[0] as DiskOutcome[] | undefined) ?? [];
      }
      await stopLabVm(stack.runDir, vm.vmId); // its pid file and sockets
      const disk = (diskId: string): string[] =>
        vm.disks
          .filter((x) => x.diskId === diskId)
          .flatMap((x) => x.volumeIds.map((v) => volumePath(stack.storageRoot, x.diskId, v)));
      for (const [i, d] of request.disks.entries()) {
        // A merge with a failed disk still reports its other disks' outcomes.
        const outcome = (result?.disks ?? failed).find((x) => x.diskId === d.diskId);
        const merged = outcome?.outcome === 'failed' ? undefined : outcome;
        const verdict: StoppedDiskVerdict = {
          snapshotId: String(request.snapshotId),
          diskId: d.diskId,
          kind: kinds[i],
          killAtMs: plan.killAtMs,
          state: 'BROKEN',
          guest: { acknowledged: 0, offsetsAcknowledged: 0, found: 0, lost: 0 },
        };
        const top = volumePath(stack.storageRoot, d.diskId, d.topVolumeId);
        const base = volumePath(stack.storageRoot, d.diskId, d.baseVolumeId);
        if (merged?.activeVolumeId !== undefined) {
          const report = await checkOne(vm.vmId, d.diskId, merged.activeVolumeId);
          Object.assign(verdict, {
            state: existsSync(top) ? 'BROKEN' : merged.mode === 'offline' ? 'offline' : 'live',
            activeVolumeId: merged.activeVolumeId,
            ...(merged.stoppedMidMerge ? { topStale: merged.stoppedMidMerge.topStale } : {}),
            guest: report.guest,
            ...(report.ok ? {} : { state: 'BROKEN', detail: report.detail }),
            ...(existsSync(top) ? { detail: 'top left on disk' } : {}),
          });
        } else if (pivotUnknown(failed.find((x) => x.diskId === d.diskId))) {
          // Both kept: one of them holds every acknowledged write.
          const fromTop = await checkOne(vm.vmId, d.diskId, d.topVolumeId);
          const fromBase = fromTop.ok ? fromTop : await checkOne(vm.vmId, d.diskId, d.baseVolumeId);
          const bothThere = existsSync(top) && existsSync(base);
          Object.assign(verdict, {
            state: bothThere && fromBase.ok ? 'keptBoth' : 'BROKEN',
            guest: fromBase.guest,
            detail: `${fromTop.ok ? 'top' : 'base'} holds the writes${bothThere ? '' : '; a volume is missing'}`,
          });
        } else {
          verdict.detail = `no result for the disk: ${failure.slice(0, 300)}`;
        }
        // A killed QEMU may leave leaked clusters (space, no data): allowed and counted; nothing worse.
        const check = await checkVolumes(disk(d.diskId));
        verdict.leakedClusters = check.leakedClusters;
        if (verdict.state !== 'BROKEN' && check.problem !== undefined)
          Object.assign(verdict, { state: 'BROKEN', detail: check.problem });
        disks.push(verdict);
      }
      // The VM starts from the volumes named, its lab data intact (when every disk named one).
      if (result) {
        const activeVolumes = Object.fromEntries(result.disks.map((d) => [d.diskId, d.activeVolumeId!]));
        await startLabVm(stack.runDir, vm.vmId, { activeVolumes });
        const verified = await verifyLabVm(stack.runDir, vm.vmId);
        await stopLabVm(stack.runDir, vm.vmId, { graceful: false });
        if (!verified.ok)
          for (const v of disks.filter((x) => x.snapshotId === String(request.snapshotId)))
            Object.assign(v, { state: 'BROKEN', detail: 'the VM started from the volumes named reads wrong data' });
      }
      opts.log(
        `merge ${plan.index}: kill at ${plan.killAtMs} ms; ${disks
          .filter((x) => x.snapshotId === String(request.snapshotId))
          .map(
            (x) =>
              `${x.diskId} ${x.kind} ${x.state}${x.topStale ? ' (top stale)' : ''}${x.detail ? ` (${x.detail})` : ''}`,
          )
          .join(', ')}`,
      );
    } finally {
      await destroyLabVm(stack.runDir, vm.vmId);
    }
  }

  /** The guest's writes to one disk, read from the chain that starts at `active`. */
  async function checkOne(
    vmId: string,
    diskId: string,
    active: string,
  ): Promise<{ ok: boolean; detail?: string; guest: StoppedDiskVerdict['guest'] }> {
    const report: GuestCheckReport = await checkGuestWrites(stack.runDir, vmId, {
      activeVolumes: { [diskId]: active },
    });
    const g = report.disks.find((x) => x.diskId === diskId);
    const problems = report.problems.filter((p) => p.diskId === undefined || p.diskId === diskId);
    const guest = {
      acknowledged: g?.acknowledged ?? 0,
      offsetsAcknowledged: g?.offsetsAcknowledged ?? 0,
      found: g?.found ?? 0,
      lost: g?.lost ?? 0,
    };
    const ok = g !== undefined && g.lost === 0 && g.acknowledged > 0 && problems.length === 0;
    return {
      ok,
      guest,
      ...(ok
        ? {}
        : {
            detail: `${guest.lost} lost of ${guest.offsetsAcknowledged}; ${problems
              .slice(0, 3)
              .map((p) => p.detail)
              .join(' | ')}`,
          }),
    };
  }

  try {
    const queue = [...plans];
    await Promise.all(
      Array.from({ length: opts.parallel }, async () => {
        for (let plan = queue.shift(); plan; plan = queue.shift()) await one(plan);
      }),
    );
  } finally {
    await stack.close();
  }
  return {
    seed: opts.seed,
    merges: opts.merges,
    disks,
    ok: disks.length > 0 && disks.every((d) => d.state !== 'BROKEN'),
    durationMs: Date.now() - started,
  };
}

/** A disk that failed because the pivot's outcome could not be told (its reason is PivotOutcomeUnknown's message). */
function pivotUnknown(outcome: DiskOutcome | undefined): boolean {
  return (
    outcome?.outcome === 'failed' &&
    outcome.reason.includes('between the pivot request') &&
    outcome.reason.includes('both are kept')
  );
}

/** `qemu-img check` of every volume still there: the first problem, and the leaked clusters found. */
async function checkVolumes(files: string[]): Promise<{ problem?: string; leakedClusters: number }> {
  let leakedClusters = 0;
  for (const f of files.filter((x) => existsSync(x))) {
    const r = await checkImage(f, { allowLeaks: true });
    if (!r.ok) return { problem: `${f}: ${r.detail}`, leakedClusters };
    leakedClusters += r.leakedClusters ?? 0;
  }
  return { leakedClusters };
}

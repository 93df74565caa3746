import { existsSync } from 'node:fs';
import * as path from 'node:path';

import { log } from '@temporalio/activity';

import { blockJobId, blockJobPrefix } from '../config/names';
import type { CommitKind } from '../domain/commit';
import { failure } from '../domain/failures';
import { volumePath } from '../domain/layout';
import { ADAPTIVE_START_BYTES_PER_SEC, type SpeedStart, startBytesPerSec } from '../domain/speed';
import { type DiskChain, volumeNames } from '../drivers/driver';
import { sameGuestData } from '../storage/image-commit';
import { removePivotRecord } from '../storage/pivot-record';
import { isBackingOf } from '../storage/qemu-img';
import { removeFixedSpeed } from '../storage/speed-record';
import { readTombstone } from '../storage/tombstone';
import { refuseShortSpace } from './commit-space';
import type { HostDeps } from './deps';
import { parseInput, translateHostErrors } from './host-step';
import { type DiskStep, type MergeStep, mergeStepSchema } from './inputs';
import { readOfflineChain } from './offline-chain';
import { newestVolume } from './pivot-outcome';
import { readGuestIo } from './speed-control';
import { guardCommit } from './volume-guard';

export type MergeStarted =
  /** `speedStart`: an adaptive job's start (domain/speed.ts), where the wait's controller begins. */
  | { outcome: 'started'; jobId: string; kind: CommitKind; chain: string[]; speedStart?: SpeedStart }
  | { outcome: 'adopted'; jobId: string; kind: CommitKind; chain: string[] }
  | { outcome: 'alreadyMerged'; jobId: string; chain: string[] }
  /**
   * The VM does not run (asked for with `allowOffline`): the disk is merged by the offline steps.
   * `kind` is unset when an earlier run had committed the top already. `pivoted`: the VM stopped
   * after the pivot of its active commit: the base holds the newest data and the top is stale, so
   * nothing is committed (activities/pivot-outcome.ts).
   */
  | {
      outcome: 'offline';
      jobId: string;
      kind?: CommitKind;
      chain: string[];
      definition: 'hypervisor' | 'caller';
      pivoted?: true;
    };

/**
 * Reads the live chain, checks top and base against it and starts the block commit under the
 * disk's deterministic job id. Safe to run twice: a job of that id already in QEMU is adopted,
 * and a top already out of the chain (merged earlier) is reported as such. A new job starts only
 * when nothing outside the disk's chain uses its top or base (activities/volume-guard.ts) and
 * the base's file system has room for what it can add to the base (storage/space.ts), else the
 * disk fails with InsufficientSpace and nothing is touched.
 */
export function createStartOrAdoptCommit(deps: HostDeps) {
  return async function startOrAdoptCommit(input: MergeStep): Promise<MergeStarted> {
    const step = parseInput(mergeStepSchema, input);
    return translateHostErrors(async () => {
      const { vmId, diskId, baseVolumeId, topVolumeId } = step;
      const jobId = blockJobId(diskId, topVolumeId);
      const topPath = volumePath(deps.storageRoot, diskId, topVolumeId);
      const basePath = volumePath(deps.storageRoot, diskId, baseVolumeId);
      const vm = step.allowOffline ? await deps.driver.vmState(vmId) : ({ running: true } as const);
      if (vm.running && step.offlineOnly)
        throw failure(
          'VmStarted',
          `VM ${vmId} stopped mid-merge and runs again: disk ${diskId} is not finished offline; top ${topVolumeId} kept, a new merge of the snapshot runs live`,
        );
      if (!vm.running) {
        const offline = await readOfflineChain(deps, vmId, diskId, baseVolumeId, vm, { liveActive: step.liveActive });
        const placed = await placeInChain(deps.storageRoot, step, offline);
        const pivoted = placed === 'active' && (await newestVolume(deps.storageRoot, step, sameGuestData)) === 'base';
        log.info('VM does not run: offline merge', { vmId, diskId, definition: vm.definition, placed, pivoted });
        return {
          outcome: 'offline',
          jobId,
          ...(placed === 'alreadyMerged' ? {} : { kind: placed }),
          chain: volumeNames(offline),
          definition: vm.definition,
          ...(pivoted ? { pivoted } : {}),
        };
      }
      const chain = await deps.driver.readChain(vmId, diskId);
      const names = volumeNames(chain);
      const topIndex = chain.volumes.findIndex((v) => v.path === topPath);
      const baseIndex = chain.volumes.findIndex((v) => v.path === basePath);
      const kind: CommitKind = topIndex === 0 ? 'active' : 'intermediate';

      const jobs = await deps.driver.listJobs(vmId);
      if (jobs.some((j) => j.id === jobId)) {
        log.info('adopting block job already in QEMU', { vmId, diskId, jobId });
        return { outcome: 'adopted', jobId, kind, chain: names };
      }
      const busy = jobs.find((j) => j.id.startsWith(blockJobPrefix(diskId)) && j.status !== 'concluded');
      if (busy) {
        throw failure(
          'DiskBusy',
          `disk ${diskId} already runs block job ${busy.id} (${busy.status}); one job per disk`,
        );
      }

      if ((await placeInChain(deps.storageRoot, step, chain)) === 'alreadyMerged')
        return { outcome: 'alreadyMerged', jobId, chain: names };

      // The guest's requests while this step checks tell whether it is busy: an adaptive job starts careful then.
      const ioBefore = step.adaptive ? await readGuestIo(deps, vmId, diskId) : undefined;
      // Only a new job is guarded: an adopted one is already running, and a merged top needs none.
      await guardCommit(deps, vmId, chain, topIndex, baseIndex);
      // Only after the guard: the measure's own `qemu-img map` holds the top open, a user the guard would see.
      const top = chain.volumes[topIndex];
      const space = await deps.driver.measureCommitSpace(vmId, {
        topNode: top.nodeName,
        topPath,
        basePath,
      });
      refuseShortSpace(space, step, 'nothing was started');
      // The VM runs from the top: a pivot record of an earlier job on it tells nothing any more.
      await removePivotRecord(deps.storageRoot, diskId, topVolumeId);
      // Nor does a speed an update fixed for that job.
      await removeFixedSpeed(deps.storageRoot, diskId, topVolumeId);
      const io = ioBefore && (await readGuestIo(deps, vmId, diskId));
      const speedStart = ioBefore && io && { io, at: Date.now(), bytesPerSec: startBytesPerSec(ioBefore, io) };

      try {
        await deps.driver.startCommit(vmId, {
          jobId,
          deviceNode: chain.rootNode,
          topNode: top.nodeName,
          baseNode: chain.volumes[baseIndex].nodeName,
          // Relative, so the overlay above keeps a portable header; not allowed for an active commit.
          backingFile: kind === 'intermediate' ? path.basename(basePath) : undefined,
          // Counters that could not be read: careful, the wait's controller takes over.
          speed: speedStart
            ? speedStart.bytesPerSec
            : step.adaptive
              ? ADAPTIVE_START_BYTES_PER_SEC
              : step.bandwidthBytesPerSec,
        });
      } catch (err) {
        // A concurrent attempt may have started the same job between our read and our start.
        if ((await deps.driver.listJobs(vmId)).some((j) => j.id === jobId)) {
          return { outcome: 'adopted', jobId, kind, chain: names };
        }
        throw err;
      }
      log.info('block commit started', { vmId, diskId, jobId, kind, speed: speedStart?.bytesPerSec });
      return { outcome: 'started', jobId, kind, chain: names, ...(speedStart ? { speedStart } : {}) };
    });
  };
}

/**
 * Where the top and base stand in the disk's chain: the commit it takes (active when the top is the
 * active layer), or `alreadyMerged` when the top left the chain by a merge into the base. Anything
 * else refuses: a top that is not in the chain (VolumeNotInChain), a base that is not its backing
 * (BaseNotBacking).
 */
export async function placeInChain(
  storageRoot: string,
  step: DiskStep,
  chain: DiskChain,
): Promise<CommitKind | 'alreadyMerged'> {
  const { diskId, baseVolumeId, topVolumeId } = step;
  const topPath = volumePath(storageRoot, diskId, topVolumeId);
  const basePath = volumePath(storageRoot, diskId, baseVolumeId);
  const topIndex = chain.volumes.findIndex((v) => v.path === topPath);
  const baseIndex = chain.volumes.findIndex((v) => v.path === basePath);
  const names = volumeNames(chain);
  if (topIndex < 0) {
    if (baseIndex >= 0 && (await wasMergedInto(storageRoot, diskId, topVolumeId, topPath, basePath, baseVolumeId)))
      return 'alreadyMerged';
    throw failure(
      'VolumeNotInChain',
      `top volume ${topVolumeId} is not in the chain of disk ${diskId} (${names.join(' -> ')})`,
    );
  }
  if (baseIndex !== topIndex + 1) {
    throw failure(
      'BaseNotBacking',
      `base volume ${baseVolumeId} is not the backing of top ${topVolumeId} on disk ${diskId} (${names.join(' -> ')})`,
    );
  }
  return topIndex === 0 ? 'active' : 'intermediate';
}

/** True when top left the chain by a merge into base: by its tombstone, or by its header. */
async function wasMergedInto(
  storageRoot: string,
  diskId: string,
  topVolumeId: string,
  topPath: string,
  basePath: string,
  baseVolumeId: string,
): Promise<boolean> {
  const tombstone = await readTombstone(storageRoot, diskId, topVolumeId);
  if (tombstone) return tombstone.mergedInto === baseVolumeId;
  if (!existsSync(topPath)) return false;
  return isBackingOf(topPath, basePath);
}

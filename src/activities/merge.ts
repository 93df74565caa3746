import { existsSync } from 'node:fs';
import * as path from 'node:path';

import { log } from '@temporalio/activity';

import { blockJobId, blockJobPrefix } from '../config/names';
import type { CommitKind } from '../domain/commit';
import { failure } from '../domain/failures';
import { volumePath } from '../domain/layout';
import { volumeNames } from '../drivers/driver';
import { isBackingOf } from '../storage/qemu-img';
import { readTombstone } from '../storage/tombstone';
import type { HostDeps } from './deps';
import { parseInput, translateHostErrors } from './host-step';
import { type MergeStep, mergeStepSchema } from './inputs';
import { guardCommit } from './volume-guard';

export type MergeStarted =
  | { outcome: 'started' | 'adopted'; jobId: string; kind: CommitKind; chain: string[] }
  | { outcome: 'alreadyMerged'; jobId: string; chain: string[] };

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

      if (topIndex < 0) {
        if (
          baseIndex >= 0 &&
          (await wasMergedInto(deps.storageRoot, diskId, topVolumeId, topPath, basePath, baseVolumeId))
        ) {
          return { outcome: 'alreadyMerged', jobId, chain: names };
        }
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

      // Only a new job is guarded: an adopted one is already running, and a merged top needs none.
      await guardCommit(deps, vmId, chain, topIndex, baseIndex);
      const top = chain.volumes[topIndex];
      const space = await deps.driver.measureCommitSpace(vmId, {
        topNode: top.nodeName,
        topPath,
        basePath,
      });
      if (space.freeBytes < space.neededBytes) {
        throw failure(
          'InsufficientSpace',
          `not enough space to commit ${topVolumeId} into ${baseVolumeId} on disk ${diskId}: needs ${space.neededBytes} bytes ` +
            `(${space.growthBytes} the commit can add to the base, for ${space.topAllocatedBytes} bytes allocated in the top, ` +
            `plus a margin of ${space.marginBytes}), ${space.freeBytes} bytes free in ${space.baseDir}; nothing was started`,
          space,
        );
      }

      try {
        await deps.driver.startCommit(vmId, {
          jobId,
          deviceNode: chain.rootNode,
          topNode: top.nodeName,
          baseNode: chain.volumes[baseIndex].nodeName,
          // Relative, so the overlay above keeps a portable header; not allowed for an active commit.
          backingFile: kind === 'intermediate' ? path.basename(basePath) : undefined,
          speed: step.bandwidthBytesPerSec,
        });
      } catch (err) {
        // A concurrent attempt may have started the same job between our read and our start.
        if ((await deps.driver.listJobs(vmId)).some((j) => j.id === jobId)) {
          return { outcome: 'adopted', jobId, kind, chain: names };
        }
        throw err;
      }
      log.info('block commit started', { vmId, diskId, jobId, kind });
      return { outcome: 'started', jobId, kind, chain: names };
    });
  };
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

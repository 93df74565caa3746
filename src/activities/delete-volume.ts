import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { log } from '@temporalio/activity';

import { blockJobId } from '../config/names';
import { failure } from '../domain/failures';
import { imageDir, PathOutsideRootError, volumePath } from '../domain/layout';
import { findJob } from '../host/driver';
import { readBackingFile } from '../host/qemu-img';
import { writeTombstone } from '../host/tombstone';
import type { HostDeps } from './deps';
import { hostStep, parseInput } from './host-step';
import { type DiskStep, diskStepSchema } from './inputs';

export interface VolumeDeleted {
  /** False when the file was already gone (a repeated delete is a success). */
  deleted: boolean;
  path: string;
}

/**
 * Detaches the merged top from QEMU and deletes its file (its space is reclaimed just after).
 * Runs only after a passed chain check, and checks again itself: the volume must be in no chain
 * of the VM, be no other image's backing file, and lie inside the storage root after symlinks
 * are resolved.
 */
export function createDeleteVolume(deps: HostDeps) {
  return async function deleteVolume(input: DiskStep): Promise<VolumeDeleted> {
    const step = parseInput(diskStepSchema, input);
    return hostStep(async () => {
      const file = volumePath(deps.storageRoot, step.diskId, step.topVolumeId);
      await assertInsideRoot(deps.storageRoot, file);

      const chains = await deps.driver.readAllChains(step.vmId);
      const holder = chains.find((c) => c.volumes.some((v) => v.path === file));
      if (holder) {
        throw failure(
          'VolumeInUse',
          `volume ${step.topVolumeId} is still in the chain of disk ${holder.diskId}; not deleted`,
        );
      }
      const child = await backedBy(imageDir(deps.storageRoot, step.diskId), file);
      if (child) {
        throw failure(
          'VolumeInUse',
          `volume ${step.topVolumeId} is the backing file of ${path.basename(child)}; not deleted`,
        );
      }

      // The base must hold the committed data on disk before the top, its only other copy, goes.
      const baseFile = volumePath(deps.storageRoot, step.diskId, step.baseVolumeId);
      const baseNode = chains.flatMap((c) => c.volumes).find((v) => v.path === baseFile)?.nodeName;
      if (baseNode) await deps.driver.flushNode(step.vmId, baseNode);

      // The concluded commit job still holds the removed node, and QEMU refuses to detach a node a
      // job holds. Its outcome was read already: the chain check passed.
      const jobId = blockJobId(step.diskId, step.topVolumeId);
      const job = await findJob(deps.driver, step.vmId, jobId);
      if (job && job.status !== 'concluded') {
        throw failure(
          'VolumeInUse',
          `volume ${step.topVolumeId} is still used by block job ${jobId} (${job.status}); not deleted`,
        );
      }
      if (job) await deps.driver.dismissJob(step.vmId, jobId);

      for (const node of await deps.driver.nodesHolding(step.vmId, file)) {
        await deps.driver.deleteNode(step.vmId, node);
      }
      await writeTombstone(deps.storageRoot, step.diskId, {
        volumeId: step.topVolumeId,
        mergedInto: step.baseVolumeId,
        deletedAt: new Date().toISOString(),
      });
      // Out of its name at once; its space is freed right after, in the background (see Reclaimer).
      if (!(await deps.reclaimer.retire(file))) return { deleted: false, path: file };
      log.info('volume deleted', { vmId: step.vmId, diskId: step.diskId, volume: step.topVolumeId });
      return { deleted: true, path: file };
    });
  };
}

/** The storage root check again on the real path: a symlinked dir must not lead outside. */
async function assertInsideRoot(storageRoot: string, file: string): Promise<void> {
  const realRoot = await fs.realpath(storageRoot);
  let realDir: string;
  try {
    realDir = await fs.realpath(path.dirname(file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!realDir.startsWith(realRoot + path.sep)) throw new PathOutsideRootError(realDir, realRoot);
}

/** An image in `dir` whose header names `file` as its backing, if any. */
async function backedBy(dir: string, file: string): Promise<string | undefined> {
  let entries: string[];
  try {
    entries = await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  for (const name of entries) {
    const candidate = path.join(dir, name);
    if (!name.endsWith('.qcow2') || candidate === file) continue;
    let backing: string | undefined;
    try {
      backing = await readBackingFile(candidate);
    } catch (err) {
      // Deleted since the listing: it names nothing any more.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    if (backing === file) return candidate;
  }
  return undefined;
}

import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { log } from '@temporalio/activity';

import { blockJobId } from '../config/names';
import { failure } from '../domain/failures';
import { PathOutsideRootError, volumePath } from '../domain/layout';
import { type DiskChain, findJob } from '../drivers/driver';
import { ImageDirMissingError } from '../drivers/errors';
import { removePivotRecord } from '../storage/pivot-record';
import { removeFixedSpeed } from '../storage/speed-record';
import { writeTombstone } from '../storage/tombstone';
import type { HostDeps } from './deps';
import { parseInput, translateHostErrors } from './host-step';
import { type CheckStep, checkStepSchema } from './inputs';
import { readStepChain } from './verify-chain';
import { guardDelete } from './volume-guard';

export interface VolumeDeleted {
  /** False when the file was already gone (a repeated delete is a success). */
  deleted: boolean;
  path: string;
}

/**
 * Detaches the merged top from QEMU and deletes its file (its space is reclaimed just after).
 * Runs only after a passed chain check, and checks again itself: the volume must be in no chain
 * of the VM, be used by nothing else on the host (activities/volume-guard.ts), and lie inside the
 * storage root after symlinks are resolved.
 */
export function createDeleteVolume(deps: HostDeps) {
  return async function deleteVolume(input: CheckStep): Promise<VolumeDeleted> {
    const step = parseInput(checkStepSchema, input);
    return translateHostErrors(async () => {
      const file = volumePath(deps.storageRoot, step.diskId, step.topVolumeId);
      await assertInsideRoot(deps.storageRoot, file);

      // A stopped VM (an offline merge) has no QEMU to let go of the top: its disk's chain is what it would open.
      const live = !step.offline || (await deps.driver.vmState(step.vmId)).running;
      const chains = live ? await deps.driver.readAllChains(step.vmId) : [await readStepChain(deps, step)];
      // By the file, not the name: through a symlinked image dir another disk's volume has another name.
      const real = await realPathOf(file);
      const inChain = await Promise.all(
        chains.map(async (c) => (await Promise.all(c.volumes.map((v) => realPathOf(v.path)))).includes(real)),
      );
      const holder = chains.find((c, i) => inChain[i] || c.volumes.some((v) => v.path === file));
      if (holder) {
        throw failure(
          'VolumeInUse',
          `volume ${step.topVolumeId} is still in the chain of disk ${holder.diskId}; not deleted`,
        );
      }
      // Nothing else on the host may use it: no image anywhere under the root names it as backing,
      // no process but the VM's QEMU (which lets go of it below) holds it open or locked.
      await guardDelete(deps, step.vmId, file, step.diskId, !live);

      if (live) await releaseFromQemu(deps, step, chains);
      await writeTombstone(deps.storageRoot, step.diskId, {
        volumeId: step.topVolumeId,
        mergedInto: step.baseVolumeId,
        deletedAt: new Date().toISOString(),
      });
      await removePivotRecord(deps.storageRoot, step.diskId, step.topVolumeId);
      await removeFixedSpeed(deps.storageRoot, step.diskId, step.topVolumeId);
      // Out of its name at once; its space is freed right after, in the background (see Reclaimer).
      if (!(await deps.reclaimer.retire(file))) return { deleted: false, path: file };
      log.info('volume deleted', { vmId: step.vmId, diskId: step.diskId, volume: step.topVolumeId });
      return { deleted: true, path: file };
    });
  };
}

/**
 * The running VM lets go of the top: the base flushed first (it must hold the committed data on
 * disk before the top, its only other copy, goes), the concluded job dismissed, the nodes detached.
 */
async function releaseFromQemu(deps: HostDeps, step: CheckStep, chains: DiskChain[]): Promise<void> {
  const file = volumePath(deps.storageRoot, step.diskId, step.topVolumeId);
  const baseFile = volumePath(deps.storageRoot, step.diskId, step.baseVolumeId);
  const baseNode = chains.flatMap((c) => c.volumes).find((v) => v.path === baseFile)?.nodeName;
  if (baseNode) await deps.driver.flushNode(step.vmId, baseNode);

  // A concluded commit job (QEMU keeps it) still holds the removed node, and QEMU refuses to detach
  // a node a job holds. Its outcome was read already: the chain check passed.
  const jobId = blockJobId(step.diskId, step.topVolumeId);
  const job = await findJob(deps.driver, step.vmId, jobId);
  if (job && job.status !== 'concluded') {
    throw failure(
      'VolumeInUse',
      `volume ${step.topVolumeId} is still used by block job ${jobId} (${job.status}); not deleted`,
    );
  }
  if (job) await deps.driver.dismissJob(step.vmId, jobId);

  await deps.driver.releaseVolume(step.vmId, file);
}

/**
 * The file a name reaches on this host, for comparison: its real path, every symlink resolved. A
 * file that is gone (a repeated delete's top; a chain volume unlinked while QEMU holds it) by its
 * directory's real path and its name; one whose directory is gone too by the name alone. A name
 * that is no absolute path is no file of this host: QEMU reports a local volume by its absolute
 * path (a `json:` specification of one is decoded to it, see resolveImageFilename), so such a name
 * is a network volume's (`nbd://…`, `json:{"driver":"nbd",…}`), and undefined here. Any other
 * error (a symlink loop, a file where a directory should be) says the name cannot be resolved,
 * and the step refuses.
 */
async function realPathOf(name: string): Promise<string | undefined> {
  if (!path.isAbsolute(name)) return undefined;
  let dir: string;
  try {
    dir = await fs.realpath(path.dirname(name));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return path.normalize(name);
    throw err;
  }
  const file = path.join(dir, path.basename(name));
  try {
    return await fs.realpath(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return file;
    throw err;
  }
}

/**
 * The storage root check again on the real path: a symlinked dir must not lead outside, and a dir
 * that does not resolve (missing, a dangling symlink) is refused before anything is touched.
 */
async function assertInsideRoot(storageRoot: string, file: string): Promise<void> {
  const realRoot = await fs.realpath(storageRoot);
  let realDir: string;
  try {
    realDir = await fs.realpath(path.dirname(file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new ImageDirMissingError(`image directory ${path.dirname(file)} does not resolve; nothing was touched`);
    throw err;
  }
  if (!realDir.startsWith(realRoot + path.sep)) throw new PathOutsideRootError(realDir, realRoot);
}

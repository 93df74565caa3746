import { Context, log } from '@temporalio/activity';

import { diskProgressSignalName } from '../config/names';
import { failure } from '../domain/failures';
import { volumePath } from '../domain/layout';
import { commitImage, ImageToolError, isLockConflict, sameGuestData } from '../storage/image-commit';
import { measureCommitSpace } from '../storage/space';
import { refuseShortSpace } from './commit-space';
import type { HostDeps } from './deps';
import { parseInput, translateHostErrors } from './host-step';
import { type OfflineCommitStep, offlineCommitStepSchema } from './inputs';
import { placeInChain } from './merge';
import { readOfflineChain, type StoppedVm } from './offline-chain';
import { newestVolume } from './pivot-outcome';
import { guardCommit } from './volume-guard';

export interface OfflineCommitted {
  /**
   * False when an earlier attempt had committed the top and moved on (its layer above, or the
   * definition, names the base), or when the VM had left the top by a pivot (it is stale).
   */
  committed: boolean;
  /** Bytes of the top's allocated data the commit copied. */
  bytes: number;
}

/**
 * Commits the top of a stopped VM's disk into its base with `qemu-img commit -d`, under the same
 * checks as the live path: the chain as the VM would open it, the whole-host guard, the space
 * pre-check. qemu-img holds QEMU's image locks meanwhile, so a VM start fails; a VM that started
 * before is refused as VmStarted, and nothing is written. The top keeps its data (`-d`), so a
 * cancel (qemu-img is killed) leaves a readable chain, and a retry writes the same data again.
 */
export function createOfflineCommit(deps: HostDeps) {
  return async function offlineCommit(input: OfflineCommitStep): Promise<OfflineCommitted> {
    const step = parseInput(offlineCommitStepSchema, input);
    return translateHostErrors(async () => {
      const vm = await stoppedOrRefuse(deps, step.vmId, `commit of ${step.topVolumeId}`);
      const chain = await readOfflineChain(deps, step.vmId, step.diskId, step.baseVolumeId, vm);
      const placed = await placeInChain(deps.storageRoot, step, chain);
      if (placed === 'alreadyMerged') return { committed: false, bytes: 0 };
      // A top the VM left by a pivot is stale: committing it would undo the guest's writes since.
      if (placed === 'active' && (await newestVolume(deps.storageRoot, step, sameGuestData)) === 'base')
        return { committed: false, bytes: 0 };
      if (placed !== step.kind)
        throw failure(
          'ChainChanged',
          `disk ${step.diskId}: the top ${step.topVolumeId} now takes an ${placed} commit, not the ${step.kind} one the merge decided; nothing was written`,
        );
      const topPath = volumePath(deps.storageRoot, step.diskId, step.topVolumeId);
      const basePath = volumePath(deps.storageRoot, step.diskId, step.baseVolumeId);
      const top = chain.volumes.findIndex((v) => v.path === topPath);
      await guardCommit(deps, step.vmId, chain, top, top + 1, true);
      const space = await measureCommitSpace(topPath, basePath);
      refuseShortSpace(space, step, 'nothing was written');
      await runCommit(deps, step, topPath, basePath, space.topAllocatedBytes);
      return { committed: true, bytes: space.topAllocatedBytes };
    });
  };
}

/** The stopped VM, or VmStarted: an offline step never writes under a running VM. */
export async function stoppedOrRefuse(deps: HostDeps, vmId: string, what: string): Promise<StoppedVm> {
  const vm = await deps.driver.vmState(vmId);
  if (vm.running)
    throw failure(
      'VmStarted',
      `VM ${vmId} started during the offline merge: the ${what} refused and changed nothing; the top is kept and the chain readable`,
    );
  return vm;
}

async function runCommit(
  deps: HostDeps,
  step: OfflineCommitStep,
  top: string,
  base: string,
  len: number,
): Promise<void> {
  const ctx = Context.current();
  const progress = offlineProgress(step, len);
  try {
    await progress.started;
    await commitImage({
      top,
      base,
      bytesPerSec: step.bandwidthBytesPerSec,
      onProgress: progress.onProgress,
      signal: ctx.cancellationSignal,
    });
  } catch (err) {
    throw await offlineToolFailure(deps, step, `commit of ${step.topVolumeId} into ${step.baseVolumeId}`, err);
  }
  log.info('offline commit done', { vmId: step.vmId, diskId: step.diskId, top: step.topVolumeId, bytes: len });
}

/**
 * What a failed qemu-img means for an offline step: an image lock held by a VM that started
 * (VmStarted) or by another process (VolumeInUse); an error of its own (ImageCommitFailed: retrying
 * does not fix a corrupt or full image). Killed by a signal that was not our cancel: retried.
 */
export async function offlineToolFailure(
  deps: HostDeps,
  step: { vmId: string; diskId: string; topVolumeId: string },
  what: string,
  err: unknown,
): Promise<unknown> {
  if (!(err instanceof ImageToolError)) return err;
  if (isLockConflict(err)) {
    await stoppedOrRefuse(deps, step.vmId, what);
    return failure(
      'VolumeInUse',
      `the ${what} on disk ${step.diskId} found an image locked by another process: ${err.message}; nothing was written`,
    );
  }
  if (err.code === null) return err;
  return failure(
    'ImageCommitFailed',
    `the ${what} on disk ${step.diskId} failed: ${err.message}; top volume ${step.topVolumeId} kept`,
  );
}

// Stryker disable all: progress for people watching, no safety check (as block-job-progress.ts); tested against a real server in test/fault/offline.test.ts
/**
 * Tells the LiveMergeWorkflow how far the commit got: one signal per tenth, so the parent's
 * history grows by ten events at most, however long the commit runs.
 */
function offlineProgress(
  step: OfflineCommitStep,
  len: number,
): { started: Promise<void>; onProgress: (fraction: number) => void } {
  const ctx = Context.current();
  let signalled = -1;
  const signal = async (fraction: number): Promise<void> => {
    const offset = Math.round(fraction * len);
    const tenth = Math.floor(fraction * 10);
    if (!step.progressWorkflowId || tenth === signalled) return;
    signalled = tenth;
    try {
      await ctx.client.workflow.getHandle(step.progressWorkflowId).signal(diskProgressSignalName, {
        diskId: step.diskId,
        phase: 'committing',
        commitKind: step.kind,
        offset,
        len,
      });
    } catch (err) {
      log.debug('progress signal not delivered', { error: String(err) });
    }
  };
  return { started: signal(0), onProgress: (fraction) => void signal(fraction) };
}
// Stryker restore all

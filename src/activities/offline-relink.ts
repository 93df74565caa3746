import * as path from 'node:path';

import { log } from '@temporalio/activity';

import { failure } from '../domain/failures';
import { volumePath } from '../domain/layout';
import { rebaseUnsafe } from '../storage/image-commit';
import { describeUser } from '../volume-users';
import type { HostDeps } from './deps';
import { parseInput, translateHostErrors } from './host-step';
import { type OfflineRelinkStep, offlineRelinkStepSchema } from './inputs';
import { overlaysOf } from './offline-chain';
import { offlineToolFailure, stoppedOrRefuse } from './offline-commit';

export interface OfflineRelinked {
  /** What now names the base: the layer above the top (intermediate), the definition (active, libvirt), or nobody yet (active, caller-held: the result tells the caller). */
  relinked: 'layerAbove' | 'definition' | 'caller';
  /** False when an earlier attempt had done it. */
  changed: boolean;
}

/**
 * After an offline commit, takes the top out of what the VM opens. Intermediate: the layer above
 * the top is rebased onto the base with `qemu-img rebase -u` (the data is the same: the base now
 * holds the top's). Active: a hypervisor-kept definition is pointed at the base; a caller-held one
 * is the caller's to change. Each is done once: a retry finds it done, and a VM that started
 * meanwhile is refused as VmStarted with nothing changed.
 */
export function createOfflineRelink(deps: HostDeps) {
  return async function offlineRelink(input: OfflineRelinkStep): Promise<OfflineRelinked> {
    const step = parseInput(offlineRelinkStepSchema, input);
    return translateHostErrors(async () => {
      const what = `relink of ${step.diskId} past ${step.topVolumeId}`;
      const vm = await stoppedOrRefuse(deps, step.vmId, what);
      const topPath = volumePath(deps.storageRoot, step.diskId, step.topVolumeId);
      const basePath = volumePath(deps.storageRoot, step.diskId, step.baseVolumeId);
      if (step.kind === 'active' && vm.definition === 'caller') return { relinked: 'caller', changed: false };
      if (step.kind === 'active') {
        const now = await deps.driver.definedActive(step.vmId, step.diskId);
        if (now === basePath) return { relinked: 'definition', changed: false };
        if (now !== topPath)
          throw failure(
            'ChainChanged',
            `disk ${step.diskId}: the VM's definition starts from ${now}, neither the top nor the base; nothing was changed`,
          );
        try {
          await deps.driver.redefineActive(step.vmId, step.diskId, topPath, basePath);
        } catch (err) {
          await stoppedOrRefuse(deps, step.vmId, what);
          throw err;
        }
        log.info('definition now starts from the base', { vmId: step.vmId, diskId: step.diskId });
        return { relinked: 'definition', changed: true };
      }
      const above = await overlayOf(deps, step.diskId, topPath);
      if (above === undefined) return { relinked: 'layerAbove', changed: false };
      try {
        // Relative, as the live commit writes it: the chain stays portable.
        await rebaseUnsafe(above, path.relative(path.dirname(above), basePath));
      } catch (err) {
        throw await offlineToolFailure(deps, step, what, err);
      }
      log.info('layer above rebased onto the base', { vmId: step.vmId, diskId: step.diskId, image: above });
      return { relinked: 'layerAbove', changed: true };
    });
  };
}

/**
 * The one image above the top, or undefined when none names it any more (an earlier attempt
 * rebased it). Anything else naming it: the commit's guard allowed one layer above, so the chain
 * changed since.
 */
async function overlayOf(deps: HostDeps, diskId: string, topPath: string): Promise<string | undefined> {
  const { above, others } = await overlaysOf(deps, diskId, topPath);
  if (above.length > 1 || others.length > 0)
    throw failure(
      'ChainChanged',
      `disk ${diskId}: ${path.basename(topPath, '.qcow2')} is used by more than the layer above since its commit (${[...above.map((image) => `it is the backing file of ${image}`), ...others.map(describeUser)].join('; ')}); nothing was changed`,
    );
  return above[0];
}

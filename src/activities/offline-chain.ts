import * as path from 'node:path';

import { failure } from '../domain/failures';
import { imageDir, volumePath } from '../domain/layout';
import type { DiskChain, VmState } from '../drivers/driver';
import { readHeaderChain } from '../storage/header-chain';
import { describeUser, type VolumeUser } from '../volume-users';
import type { HostDeps } from './deps';

export type StoppedVm = Extract<VmState, { running: false }>;

/**
 * The chain a stopped VM opens for a disk, active first: from the volume its hypervisor-kept
 * definition names, or (a caller-held definition) the volume the VM ran from when it stopped
 * mid-merge, or else the one image above each layer, upwards from the base; then down from there
 * as the image headers name it, as QEMU would open it.
 */
export async function readOfflineChain(
  deps: HostDeps,
  vmId: string,
  diskId: string,
  baseVolumeId: string,
  vm: StoppedVm,
  from: {
    /** A top committed already: out of a caller-held chain even while its file still names the base. */
    committedTop?: string;
    /**
     * The volume QEMU ran the disk from before it stopped (a caller-held definition starts it there):
     * after QEMU finished an intermediate commit, the top still names the base beside the layer above.
     */
    liveActive?: string;
  } = {},
): Promise<DiskChain> {
  const active =
    vm.definition === 'hypervisor'
      ? await deps.driver.definedActive(vmId, diskId)
      : from.liveActive !== undefined
        ? volumePath(deps.storageRoot, diskId, from.liveActive)
        : await leafAbove(deps, diskId, volumePath(deps.storageRoot, diskId, baseVolumeId), from.committedTop);
  const files = await readHeaderChain(active);
  return { diskId, rootNode: '', volumes: files.map((p) => ({ path: p, nodeName: '' })) };
}

/**
 * The image a caller-held VM starts from: the base's single overlay, that one's, and so on. Images
 * that branch leave the VM's volume unknown, and names that cannot be read might be the branch:
 * both refuse, and nothing is touched.
 */
async function leafAbove(deps: HostDeps, diskId: string, base: string, committedTop?: string): Promise<string> {
  const dir = imageDir(deps.storageRoot, diskId);
  let layer = base;
  for (const seen = new Set<string>(); !seen.has(layer);) {
    seen.add(layer);
    let overlays = (await overlaysOf(deps, diskId, layer)).above;
    // A committed top is out once nothing lies above it (its layer above rebased, or it was the active one).
    if (committedTop !== undefined && overlays.includes(committedTop)) {
      if ((await overlaysOf(deps, diskId, committedTop)).above.length === 0)
        overlays = overlays.filter((o) => o !== committedTop);
    }
    if (overlays.length === 0) return layer;
    if (overlays.length > 1 || path.dirname(overlays[0]) !== dir)
      throw failure(
        'ChainBranches',
        `the VM's volume on disk ${diskId} cannot be told: ${path.basename(layer, '.qcow2')} is the backing of ${overlays.join(', ')}; nothing was touched`,
      );
    layer = overlays[0];
  }
  throw failure('ChainBranches', `the overlays above ${path.basename(base, '.qcow2')} on disk ${diskId} make a loop`);
}

/** What names a layer of a stopped VM's chain: the images directly above it, and any other name. */
export interface Overlays {
  /** Images naming it as their backing file, by their own header. */
  above: string[];
  /** Other images that make QEMU open it: through files outside the root, or as a data file. */
  others: VolumeUser[];
}

/**
 * The images that name `layer`, read from the image index alone (a stopped VM's chain; no process
 * scan). Names that cannot be read might name it: they refuse, and nothing is touched.
 */
export async function overlaysOf(deps: HostDeps, diskId: string, layer: string): Promise<Overlays> {
  const users = await deps.usage.imagesNaming(layer);
  const unknown = users.filter((u) => u.kind === 'unresolvedName' || u.kind === 'unreadable');
  if (unknown.length > 0)
    throw failure(
      unknown.every((u) => u.kind === 'unreadable') ? 'CorruptImageHeader' : 'UnresolvedImageName',
      `the overlays of ${path.basename(layer, '.qcow2')} on disk ${diskId} cannot be told: ${unknown.map(describeUser).join('; ')}; nothing was touched`,
    );
  const direct = (u: VolumeUser): u is Extract<VolumeUser, { kind: 'backingOf' }> =>
    u.kind === 'backingOf' && u.through === undefined;
  return { above: users.filter(direct).map((u) => u.image), others: users.filter((u) => !direct(u)) };
}

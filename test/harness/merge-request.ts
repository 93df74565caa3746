import type { LabVm } from '../../lab/vm';
import type { LiveMergeRequest } from '../../src/domain/input';
import { HOST_ID } from './host-id';

/** Each disk's merge: `intermediate` merges volume 1 into 0, `active` the top into the one below. */
export function mergeRequest(
  vm: Pick<LabVm, 'vmId' | 'disks'>,
  snapshotId: string,
  kinds: Array<'intermediate' | 'active'>,
  options: LiveMergeRequest['options'] = {},
): LiveMergeRequest {
  return {
    snapshotId,
    vmId: vm.vmId,
    hostId: HOST_ID,
    disks: kinds.map((kind, i) => {
      const d = vm.disks[i];
      const n = d.volumeIds.length;
      return kind === 'intermediate'
        ? { diskId: d.diskId, baseVolumeId: d.volumeIds[0], topVolumeId: d.volumeIds[1] }
        : { diskId: d.diskId, baseVolumeId: d.volumeIds[n - 2], topVolumeId: d.volumeIds[n - 1] };
    }),
    options,
  };
}

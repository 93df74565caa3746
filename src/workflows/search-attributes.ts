import { patched, upsertSearchAttributes } from '@temporalio/workflow';

import {
  ACTIVE_VOLUMES,
  DISK_ID,
  HOST_ID,
  MERGE_MODE,
  MERGE_OUTCOME,
  type MergeOutcomeValue,
  SNAPSHOT_ID,
  VM_ID,
} from '../config/search-attributes';
import type { MergeMode } from '../domain/commit';

/**
 * What the workflows tell the visibility store, so that operators find merges by VM, host,
 * snapshot, disk and outcome (`temporal workflow list --query 'VmId="vm-7"'`, the Web UI's filter).
 *
 * A namespace without these attributes registered refuses the upsert: the workflow task fails with
 * `BadSearchAttributes: ... no mapping defined for search attribute VmId` and is retried until they
 * are registered. The merge's identity is therefore upserted first, before any step reaches a host,
 * so such a merge waits untouched (nothing started, nothing deleted) and goes on by itself once an
 * operator registers them; the engine worker warns at start when they are missing.
 *
 * Behind a patch: a merge started before the workflows set them replays without the upserts.
 */
const PATCH = 'merge-search-attributes';

export function tagMerge(ids: { vmId: string; hostId: string; snapshotId: string; diskId?: string }): void {
  if (!patched(PATCH)) return;
  upsertSearchAttributes([
    { key: VM_ID, value: ids.vmId },
    { key: HOST_ID, value: ids.hostId },
    { key: SNAPSHOT_ID, value: ids.snapshotId },
    ...(ids.diskId === undefined ? [] : [{ key: DISK_ID, value: ids.diskId }]),
  ]);
}

/** How the merge (or one disk's merge) ended. */
export function tagOutcome(outcome: MergeOutcomeValue): void {
  if (!patched(PATCH)) return;
  upsertSearchAttributes([{ key: MERGE_OUTCOME, value: outcome }]);
}

/**
 * The mode and the volumes the disks start from, for a caller that keeps the VM's definition.
 * Only in merges that know the offline path (their own patch, checked by the caller).
 */
export function tagModeAndActive(
  mode: MergeMode | 'mixed',
  active: { diskId: string; activeVolumeId?: string }[],
): void {
  const volumes = active.flatMap((d) => (d.activeVolumeId === undefined ? [] : [`${d.diskId}=${d.activeVolumeId}`]));
  upsertSearchAttributes([
    { key: MERGE_MODE, value: mode },
    ...(volumes.length === 0 ? [] : [{ key: ACTIVE_VOLUMES, value: volumes }]),
  ]);
}

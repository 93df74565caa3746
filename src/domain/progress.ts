import type { CommitKind } from './commit';
import type { DiskPhase } from './phases';

export type { DiskPhase } from './phases';

/** What the `progress` query of a LiveMergeWorkflow answers, one entry per disk. */
export interface DiskProgress {
  diskId: string;
  phase: DiskPhase;
  jobStatus?: string;
  offset?: number;
  len?: number;
  commitKind?: CommitKind;
  reason?: string;
}

export interface MergeProgress {
  snapshotId: string;
  vmId: string;
  hostId: string;
  disks: DiskProgress[];
  /** Speed limit of the block jobs now, bytes per second (0 is unlimited); `setBandwidth` changes it. */
  bandwidthBytesPerSec?: number;
}

export const diskProgressSignalName = 'diskProgress';
export const progressQueryName = 'progress';

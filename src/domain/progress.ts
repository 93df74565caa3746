/** What the `progress` query of a LiveMergeWorkflow answers, one entry per disk. */

export type DiskPhase =
  | 'pending'
  | 'merging'
  | 'waiting'
  | 'pivoting'
  | 'verifying'
  | 'deleting'
  | 'cleaning'
  | 'cancelling'
  | 'merged'
  | 'alreadyMerged'
  | 'failed'
  | 'cancelled';

export interface DiskProgress {
  diskId: string;
  phase: DiskPhase;
  jobStatus?: string;
  offset?: number;
  len?: number;
  commitKind?: 'active' | 'intermediate';
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

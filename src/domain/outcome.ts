import type { CommitKind } from './commit';

export interface DiskMerged {
  diskId: string;
  outcome: 'merged' | 'alreadyMerged';
  commitKind?: CommitKind;
  chainBefore: string[];
  chainAfter: string[];
  /** False when the top file was already gone (a re-run after the delete). */
  topDeleted: boolean;
}

export interface DiskFailed {
  diskId: string;
  outcome: 'failed';
  reason: string;
  /** The top volume stays on disk whenever a disk's merge fails. */
  topKept: true;
}

export type DiskOutcome = DiskMerged | DiskFailed;

export interface LiveMergeResult {
  snapshotId: string;
  vmId: string;
  disks: DiskMerged[];
}

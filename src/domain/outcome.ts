import type { CommitKind, MergeMode } from './commit';

export interface DiskMerged {
  diskId: string;
  outcome: 'merged' | 'alreadyMerged';
  commitKind?: CommitKind;
  chainBefore: string[];
  chainAfter: string[];
  /** False when the top file was already gone (a re-run after the delete). */
  topDeleted: boolean;
  /** Unset in merges recorded before the offline path existed (all live). */
  mode?: MergeMode;
  /**
   * The volume the VM's disk starts from now (chainAfter's first). After an offline merge of a VM
   * whose definition the caller keeps, the caller must start the VM from it.
   */
  activeVolumeId?: string;
  /** Set when the VM stopped during the live merge and the disk was finished offline. */
  stoppedMidMerge?: StoppedMidMerge;
}

export interface StoppedMidMerge {
  /**
   * True when the VM had pivoted to the base before it stopped: the top held no newest data, was
   * not committed, and is deleted. A definition that still names the top must not start the VM.
   */
  topStale: boolean;
}

export interface DiskFailed {
  diskId: string;
  outcome: 'failed';
  reason: string;
  /** The failure's named type (domain/failures.ts), when it has one: HostUnreachable, VolumeInUse… */
  failureType?: string;
  /** The top volume stays on disk whenever a disk's merge fails. */
  topKept: true;
}

export type DiskOutcome = DiskMerged | DiskFailed;

export interface LiveMergeResult {
  snapshotId: string;
  vmId: string;
  disks: DiskMerged[];
}

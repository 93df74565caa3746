import type { CommitKind, MergeMode } from './commit';
import type { StoppedMidMerge } from './outcome';
import type { DiskPhase } from './phases';
import type { SpeedMode, SpeedProgress } from './speed';

export type { DiskPhase } from './phases';

/** What the `progress` query of a LiveMergeWorkflow answers, one entry per disk. */
export interface DiskProgress {
  diskId: string;
  phase: DiskPhase;
  jobStatus?: string;
  offset?: number;
  len?: number;
  commitKind?: CommitKind;
  /** Set once the merge step decided: live (block job in QEMU) or offline (the VM does not run). */
  mode?: MergeMode;
  /** Once merged: the volume the VM's disk starts from now. */
  activeVolumeId?: string;
  /** Once merged: the VM stopped during the live merge, and the disk was finished offline. */
  stoppedMidMerge?: StoppedMidMerge;
  reason?: string;
  /** Running active commits: false once `len - offset` stopped shrinking (domain/convergence.ts). */
  converging?: boolean;
  /** What the job has left to copy, `len - offset`, when it was last reported. */
  remainingBytes?: number;
  /** Since when the remaining bytes have not shrunk (ISO time, host clock), while not converging. */
  notConvergingSince?: string;
  /** When the convergence policy `lift` lifted the job's speed limit (ISO time). */
  speedLiftedAt?: string;
  /**
   * A running job's speed, and in the adaptive mode the guest's latency against its target: live
   * from the wait's heartbeat (`getProgress`, `npm run watch`), not in the workflow's own query.
   */
  speed?: SpeedProgress;
}

export interface MergeProgress {
  snapshotId: string;
  vmId: string;
  hostId: string;
  disks: DiskProgress[];
  /** Speed limit of the block jobs now, bytes per second (0 is unlimited); `setBandwidth` changes it. */
  bandwidthBytesPerSec?: number;
  /** `adaptive` or `fixed` (domain/speed.ts); a `setBandwidth` update makes it fixed. */
  speedMode?: SpeedMode;
}

/** An intermediate commit (below the active layer) ends by itself; an active commit needs a pivot. */
export const COMMIT_KINDS = ['active', 'intermediate'] as const;
export type CommitKind = (typeof COMMIT_KINDS)[number];

/** Live: QEMU's block commit in the running VM. Offline: qemu-img on the images of a VM that does not run. */
export type MergeMode = 'live' | 'offline';

/** What a commit of the top into the base can add to the base's file, and the room there. */
export interface CommitSpace {
  /** Virtual bytes allocated in the top: what the commit copies. */
  topAllocatedBytes: number;
  /** The most the commit can add to the base's file: data, L2 tables, refcount blocks. */
  growthBytes: number;
  marginBytes: number;
  /** growthBytes + marginBytes: the free space the commit needs. */
  neededBytes: number;
  /** Free bytes on the base's file system, as an unprivileged writer may use them (statfs f_bavail). */
  freeBytes: number;
  /** The directory whose file system was measured: the base's. */
  baseDir: string;
}

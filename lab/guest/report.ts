/** The guest check's report: per disk what was acknowledged and found, and every problem. */
export type GuestProblemKind =
  /** An acknowledged write is not on the disk: an older record, nothing, or something else is there. */
  | 'lost-write'
  /** A record (its magic is there) whose CRC-32 is wrong. */
  | 'bad-checksum'
  /** A record with a right checksum but another disk, offset, size or nonce than this place and run. */
  | 'foreign-record'
  /** A record whose sequence number the ACK stream cannot explain (beyond the one write in flight). */
  | 'unexpected-record'
  /** Bytes in the write region that are neither zeros nor a record. */
  | 'garbage'
  /** A lab pattern region that does not hold its layer's pattern. */
  | 'pattern'
  /** Bytes outside the write region and the pattern regions that are not zero. */
  | 'not-zero'
  /** The ACK log itself: a malformed line, a gap in the sequence, an offset outside the region… */
  | 'ack-log'
  /** The writer reported an error (an ERR line). */
  | 'guest-error'
  /** `qemu-img check` found errors or corruptions in a volume, or leaks after a clean stop. */
  | 'image-check'
  /** The disk's chain could not be read. */
  | 'chain';

export interface GuestProblem {
  kind: GuestProblemKind;
  /** Unset for problems of the whole log. */
  diskId?: string;
  /** Byte offset on the disk, where it applies. */
  offset?: number;
  detail: string;
}

export interface ImageCheck {
  volumeId: string;
  path: string;
  ok: boolean;
  detail?: string;
  /** Leaked clusters, which pass only when the guest did not stop cleanly (its QEMU was killed). */
  leakedClusters?: number;
}

export interface GuestDiskReport {
  diskId: string;
  /** The writer's disk index (0 = /dev/vda). */
  index: number;
  /** The volume the disk's device wrote to at the end (the newest volume file still there, or the one named). */
  activePath: string;
  /** Volume ids, active first, base last, from the image headers. */
  chain: string[];
  /** ACK lines for the disk. */
  acknowledged: number;
  /** The highest acknowledged sequence number (ACKs run 1, 2, 3… per disk). */
  lastAckedSeq: number;
  /** Distinct offsets acknowledged. */
  offsetsAcknowledged: number;
  /** Acknowledged offsets that hold their last acknowledged record or a later one. */
  found: number;
  /** Of `found`, those holding a later record the guest wrote but had not reported. */
  foundLater: number;
  /** Acknowledged offsets whose last acknowledged record is gone. */
  lost: number;
  /** Valid records of this run found in the write region. */
  records: number;
  /** The writes the writer's DONE line reports (a clean stop only). */
  doneWrites?: number;
  imageChecks: ImageCheck[];
  problems: GuestProblem[];
  /** Problems beyond the first 50 of the disk are counted here, not listed. */
  moreProblems: number;
}

export interface GuestCheckReport {
  vmId: string;
  ok: boolean;
  nonce: string;
  ackLog: string;
  /** Every disk has its DONE line: the guest flushed and powered off by itself. */
  stoppedCleanly: boolean;
  disks: GuestDiskReport[];
  /** Every problem: the log's, then each disk's (at most 50 a disk). */
  problems: GuestProblem[];
}

export interface GuestCheckOptions {
  /** Where the raw copies of the disks go (removed afterwards); default the system's temp dir. */
  tmpDir?: string;
  /**
   * Per disk id, the volume its device wrote to last, when the files cannot tell: after an active
   * commit's pivot the top still exists (a QEMU killed before the delete) but the guest wrote to
   * the base since. Default: the newest volume file still there.
   */
  activeVolumes?: Record<string, string>;
}

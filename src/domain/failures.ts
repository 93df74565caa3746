import { ApplicationFailure } from '@temporalio/common';

/**
 * Every failure type the product raises, in one table: whether a retry can fix it, and what it
 * means to the person who reads it in the Web UI. The retry policies (config/policy.ts) take their
 * non-retryable types from here, workflows and activities raise them with `failure()`, and
 * README's "Failure types" table is checked against this one by a test.
 */
export const FAILURES = {
  InvalidMergeInput: {
    retryable: false,
    meaning: 'the input (or a setBandwidth value) is malformed; the message names the field',
  },
  VmNotFound: {
    retryable: false,
    meaning:
      'a step that needs the running VM found none (a merge recorded before the offline path; a delete racing a stop); a VM that is shut off at the merge step is merged offline instead',
  },
  VmGone: {
    retryable: false,
    meaning:
      "the VM's QEMU no longer answers on its QMP socket: only merges recorded before the stopped-mid-merge path fail with it; newer ones finish the disk offline",
  },
  DiskNotFound: { retryable: false, meaning: 'the VM has no such disk' },
  VolumeNotInChain: {
    retryable: false,
    meaning: "the top is not in the disk's chain, and no earlier merge into the base removed it",
  },
  BaseNotBacking: { retryable: false, meaning: "the base is not the top's backing volume" },
  VmStarted: {
    retryable: false,
    meaning:
      'the VM started during an offline merge, between two of its steps: the step refused and changed nothing; the chain is readable, the top kept; a new merge of the snapshot runs live',
  },
  ImageCommitFailed: {
    retryable: false,
    meaning:
      "qemu-img failed on a stopped VM's images (the offline commit or rebase; its error is in the message): the chain is readable, the top kept",
  },
  ChainBranches: {
    retryable: false,
    meaning:
      "a stopped VM's definition is the caller's, and the images above the base branch: the volume the VM starts from cannot be told; nothing was touched",
  },
  ChainChanged: {
    retryable: false,
    meaning:
      "the disk's chain changed between two steps of an offline merge (a layer appeared, went, or changed its backing); the step refused and changed nothing",
  },
  PivotOutcomeUnknown: {
    retryable: false,
    meaning:
      "the VM stopped between an active commit's pivot request and QEMU's confirmation, and the top and the base hold different data: which one the guest wrote last cannot be told; both are kept, and the message names which to start from in either case",
  },
  DiskBusy: { retryable: false, meaning: 'another block job of this product runs on the disk (one job per disk)' },
  InsufficientSpace: {
    retryable: false,
    meaning:
      "the base's file system has less free space than the commit can add to the base, plus a margin; the message names both; nothing was started",
  },
  BlockJobFailed: {
    retryable: false,
    meaning: "the block job ended in error in QEMU (QEMU's error is in the message)",
  },
  ChainVerificationFailed: {
    retryable: false,
    meaning: 'after the job the top is still in the chain or the base is missing',
  },
  BaseShared: {
    retryable: false,
    meaning:
      "the base is used outside the disk's chain (another image's backing, another process): nothing is written into it",
  },
  VolumeInUse: {
    retryable: false,
    meaning:
      'the top is used outside its chain (a backing file, a process, a lock, a block job): not committed or deleted',
  },
  PathOutsideStorageRoot: { retryable: false, meaning: "a volume's real path lies outside the host's storage root" },
  CorruptImageHeader: {
    retryable: false,
    meaning: "an image's header names its backing or data file where it cannot be read",
  },
  UnresolvedImageName: {
    retryable: false,
    meaning:
      'an image under the storage root names a file in a way this host cannot tie to a file (a network protocol, a name relative to the opener, a json: node it cannot read): it may be the volume; the message names the image and the name; nothing was touched',
  },
  NotConverging: {
    retryable: false,
    meaning:
      'an active commit made no progress for the convergence window (the guest dirties faster than the job copies) and the policy is fail: the job was cancelled, never pivoted, the chain is as before',
  },
  HostUnreachable: {
    retryable: false,
    meaning:
      "no host agent picked up the disk's workflow (before disk-on-host: its first step) within hostPickupTimeoutSeconds",
  },
  DiskMergeFailed: {
    retryable: false,
    meaning: "the merge's summary when any disk failed; each disk's reason is in the message",
  },
  QmpTimeoutError: { retryable: true, meaning: 'QEMU did not answer a QMP command in time; the step is retried' },
  QmpClosedError: {
    retryable: true,
    meaning: 'the QMP connection broke during a step; the step is retried on a new one',
  },
  ImageDirMissingError: {
    retryable: true,
    meaning:
      "the disk's image directory does not resolve at the delete (missing, a dangling symlink): nothing was touched; the step is retried, and a storage mount that comes back resolves it",
  },
  QmpCommandError: {
    retryable: true,
    meaning: 'QEMU refused a command a step needs (e.g. detaching a node); the step is retried',
  },
} as const satisfies Record<string, { retryable: boolean; meaning: string }>;

export type FailureType = keyof typeof FAILURES;
export type NonRetryableType = {
  [K in FailureType]: (typeof FAILURES)[K]['retryable'] extends false ? K : never;
}[FailureType];

export const NON_RETRYABLE_TYPES = (Object.keys(FAILURES) as FailureType[]).filter(
  (t): t is NonRetryableType => !FAILURES[t].retryable,
);

/**
 * A failure of a named type, non-retryable when the table says so. The retryable types are raised
 * by the QMP client as errors of that name (the SDK takes an error's name as its failure type).
 */
export function failure(type: NonRetryableType, message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({
    type,
    message,
    nonRetryable: true,
    details: details === undefined ? [] : [details],
  });
}

/**
 * The phases of one disk's merge, as the `progress` query shows them: written down once, each
 * with who reports it, what the block job is doing meanwhile, and what may come next.
 *
 * The order of the keys is the phases' rank: LiveMergeWorkflow never moves a disk to a phase of
 * lower rank, so a late signal cannot undo a newer one. Keep the order; recorded histories rely on it.
 *
 * Reporters: `LiveMergeWorkflow` sets a phase itself (child started, child result); the
 * `DiskMergeWorkflow` child signals it to the parent; `waitForBlockJob` signals it from the host
 * as QEMU reports the job. Phases nobody reports any more (the child signalled them before the
 * `lean-progress-signals` patch) still pass in the child; the query shows the phase before them.
 */
export const DISK_PHASES = {
  pending: {
    reportedBy: 'LiveMergeWorkflow',
    job: 'notStarted',
    next: ['merging'],
    meaning: 'waits for its DiskMergeWorkflow to start',
  },
  merging: {
    reportedBy: 'LiveMergeWorkflow',
    job: 'notStarted',
    next: ['waiting', 'pivoting', 'committing', 'verifying', 'cancelling', 'failed'],
    meaning:
      'the merge step reads the live chain and starts (or adopts) the block commit; a VM that does not run is merged offline',
  },
  waiting: {
    reportedBy: 'waitForBlockJob',
    job: 'running',
    next: ['pivoting', 'committing', 'relinking', 'verifying', 'cancelling', 'failed'],
    meaning:
      'the block job copies the top into the base (announced once it has run a second); a VM that stops meanwhile is finished offline',
  },
  pivoting: {
    reportedBy: 'waitForBlockJob',
    job: 'running',
    next: ['committing', 'relinking', 'verifying', 'cancelling', 'failed'],
    meaning: 'an active commit is ready: the host records the pivot, then completes it; the VM then writes to the base',
  },
  committing: {
    reportedBy: 'DiskMergeWorkflow',
    job: 'offline',
    next: ['relinking', 'cancelling', 'failed'],
    meaning: "the VM does not run: qemu-img commits the top into the base, holding the images' locks",
  },
  relinking: {
    reportedBy: 'DiskMergeWorkflow',
    job: 'offline',
    next: ['verifying', 'failed'],
    meaning:
      "the top leaves what the VM opens: the layer above is rebased onto the base, or the VM's definition names the base",
  },
  verifying: {
    reportedBy: 'waitForBlockJob',
    job: 'over',
    next: ['deleting', 'failed'],
    meaning: 'the job ended well; the chain is read from QEMU: top gone, base present',
  },
  deleting: {
    reportedBy: 'nobody',
    job: 'over',
    next: ['cleaning', 'failed'],
    meaning: 'the top is detached from QEMU and its file deleted',
  },
  cleaning: {
    reportedBy: 'nobody',
    job: 'over',
    next: ['merged', 'alreadyMerged', 'failed'],
    meaning: 'the concluded block job is dismissed',
  },
  cancelling: {
    reportedBy: 'DiskMergeWorkflow',
    job: 'over',
    next: ['cancelled', 'failed'],
    meaning: 'the merge was cancelled: the block job is cancelled and waited for, no pivot',
  },
  merged: {
    reportedBy: 'LiveMergeWorkflow',
    job: 'over',
    next: [],
    meaning: 'committed, verified, top deleted',
  },
  alreadyMerged: {
    reportedBy: 'LiveMergeWorkflow',
    job: 'over',
    next: [],
    meaning: 'an earlier run had merged the top already; whatever was left was finished',
  },
  failed: {
    reportedBy: 'DiskMergeWorkflow',
    job: 'over',
    next: [],
    meaning: 'the disk failed; the reason says why, and the top volume is kept',
  },
  cancelled: {
    reportedBy: 'DiskMergeWorkflow',
    job: 'over',
    next: [],
    meaning: 'cancelled before the block job ended: chain as before, top kept',
  },
} as const satisfies Record<string, PhaseSpec>;

interface PhaseSpec {
  reportedBy: 'LiveMergeWorkflow' | 'DiskMergeWorkflow' | 'waitForBlockJob' | 'nobody';
  /**
   * Whether the disk's block job has not started, runs (and takes a new speed), or is over; or the
   * VM does not run and qemu-img works offline, at the speed it started with.
   */
  job: 'notStarted' | 'running' | 'over' | 'offline';
  next: readonly string[];
  meaning: string;
}

export type DiskPhase = keyof typeof DISK_PHASES;

const RANK = new Map((Object.keys(DISK_PHASES) as DiskPhase[]).map((p, i) => [p, i]));

/** True when moving from `from` to `to` is not a step back (a late signal is ignored). */
export function isForward(from: DiskPhase, to: DiskPhase): boolean {
  return (RANK.get(to) ?? -1) >= (RANK.get(from) ?? -1);
}

export function isFinal(phase: DiskPhase): boolean {
  return DISK_PHASES[phase].next.length === 0;
}

export function jobState(phase: DiskPhase): PhaseSpec['job'] {
  return DISK_PHASES[phase].job;
}

/**
 * Whether DiskMergeWorkflow signals this phase to its parent. Before the `lean-progress-signals`
 * patch it signalled every phase it passed; recorded histories replay that way.
 */
export function childSignals(phase: DiskPhase): boolean {
  return DISK_PHASES[phase].reportedBy === 'DiskMergeWorkflow';
}

/** The phase waitForBlockJob reports for a job QEMU shows in `status` (with `error` once it failed). */
export function phaseOfJob(status: string, error: string | undefined): 'waiting' | 'pivoting' | 'verifying' {
  if (status === 'ready') return 'pivoting';
  if (status === 'concluded' && error === undefined) return 'verifying';
  return 'waiting';
}

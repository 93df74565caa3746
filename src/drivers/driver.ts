// Stryker disable all: mutation testing covers only the code between the restore and disable markers below, the code that decides what is written or deleted
import * as path from 'node:path';

import type { CommitSpace } from '../domain/commit';
import type { GuestIo } from '../domain/speed';

/**
 * What the host activities need from a hypervisor. The QMP driver talks to real QEMU; a
 * simulated driver with the same interface serves benchmarks at scale.
 */

export interface ChainVolume {
  /** Absolute path of the image file. */
  path: string;
  /** QEMU format node name of this layer. */
  nodeName: string;
}

export interface DiskChain {
  diskId: string;
  /** Node the device writes to; names the disk in block-commit's `device`. */
  rootNode: string;
  /** Active layer first, base last. */
  volumes: ChainVolume[];
}

/** QEMU's job states (QAPI JobStatus, QEMU 7.2); `null` is the *string* "null": the job is dismissed. */
export const JOB_STATUSES = [
  'undefined',
  'created',
  'running',
  'paused',
  'ready',
  'standby',
  'waiting',
  'pending',
  'aborting',
  'concluded',
  'null',
] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];

export interface BlockJob {
  id: string;
  type: string;
  status: JobStatus;
  offset: number;
  len: number;
  /** Set once a job concluded in error (including a cancel outside `ready`). */
  error?: string;
}

export interface StartCommit {
  jobId: string;
  deviceNode: string;
  topNode: string;
  baseNode: string;
  /** Backing file name written into the overlay above top (intermediate commit only). */
  backingFile?: string;
  /** Bytes per second; 0 is unlimited. */
  speed: number;
}

/** The commit to measure: the top's node (flushed first), the top's and the base's files. */
export interface CommitSpaceQuery {
  topNode: string;
  topPath: string;
  basePath: string;
}

/**
 * Whether a VM runs on this host. A stopped VM's definition (the volume each disk starts from) is
 * kept by the hypervisor (a persistent libvirt domain, shut off) or by the caller (a raw-QEMU VM,
 * a transient libvirt domain that is gone): the offline merge updates the one, reports to the other.
 */
export type VmState = { running: true } | { running: false; definition: 'hypervisor' | 'caller' };

export interface HypervisorDriver {
  /** Never throws VmNotFound: a VM that does not run is stopped. */
  vmState(vmId: string): Promise<VmState>;
  /** A stopped VM's hypervisor-kept definition: the file the disk starts from. Throws DiskNotFound. */
  definedActive(vmId: string, diskId: string): Promise<string>;
  /**
   * Points a stopped VM's hypervisor-kept definition of the disk at `to`, where it named `from`;
   * nothing when it names `to` already. Throws when it names neither, or the VM runs.
   */
  redefineActive(vmId: string, diskId: string, from: string, to: string): Promise<void>;
  /** Throws VmNotFound / VmGone / DiskNotFound (see drivers/errors.ts). */
  readChain(vmId: string, diskId: string): Promise<DiskChain>;
  readAllChains(vmId: string): Promise<DiskChain[]>;
  listJobs(vmId: string): Promise<BlockJob[]>;
  startCommit(vmId: string, request: StartCommit): Promise<void>;
  /** The pivot of an active commit in `ready`. */
  completeJob(vmId: string, jobId: string): Promise<void>;
  cancelJob(vmId: string, jobId: string): Promise<void>;
  /**
   * Forgets a concluded job once its outcome was read: QEMU keeps it (`auto-dismiss: false`) until
   * then; libvirt dismisses jobs itself, and its driver drops only its own record of the job.
   */
  dismissJob(vmId: string, jobId: string): Promise<void>;
  setSpeed(vmId: string, jobId: string, speed: number): Promise<void>;
  /** The guest's I/O counters on the disk since the VM started: what the adaptive speed reads. */
  guestIo(vmId: string, diskId: string): Promise<GuestIo>;
  /** Nodes (libvirt: layers) that still hold `path` open, format node before file node. */
  nodesHolding(vmId: string, path: string): Promise<string[]>;
  /**
   * The VM lets go of a volume no chain holds any more (the outcome the delete step needs): QEMU's
   * nodes that still hold it are detached; libvirt detaches a removed layer itself, so its driver
   * only checks that none does. Throws when the VM still uses it.
   */
  releaseVolume(vmId: string, path: string): Promise<void>;
  /** The processes of the VM's hypervisor (its QEMU): the only ones allowed to hold its volumes. */
  hypervisorPids(vmId: string): Promise<number[]>;
  /** Writes a node's cached metadata to its file. */
  flushNode(vmId: string, nodeName: string): Promise<void>;
  /**
   * How much a commit of the top into the base can add to the base, and the free space of the
   * base's file system (storage/space.ts). Touches nothing but a flush of the top's node.
   */
  measureCommitSpace(vmId: string, query: CommitSpaceQuery): Promise<CommitSpace>;
  /**
   * Resolves on the VM's next job status change, or after `timeoutMs`, or at once when `signal`
   * aborts: events shorten polling. It listens from the call on, so a caller arms it before it
   * reads the job list, and a change in between still wakes it.
   */
  nextJobChange(vmId: string, timeoutMs: number, signal?: AbortSignal): Promise<void>;
  close(): Promise<void>;
}

/** The job of that id among the VM's jobs, or undefined when QEMU has none. */
// Stryker restore all
export async function findJob(driver: HypervisorDriver, vmId: string, jobId: string): Promise<BlockJob | undefined> {
  return (await driver.listJobs(vmId)).find((j) => j.id === jobId);
}
// Stryker disable all

/** The chain's volume ids, active layer first: how chains are shown to people. */
export function volumeNames(chain: DiskChain): string[] {
  return chain.volumes.map((v) => path.basename(v.path, '.qcow2'));
}

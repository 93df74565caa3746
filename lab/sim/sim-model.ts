import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { CommitSpace } from '../../src/domain/commit';
import type { CommitSpaceQuery, JobStatus, StartCommit } from '../../src/drivers/driver';
import { QmpCommandError } from '../../src/drivers/qmp/errors';
import { commitSpaceMargin } from '../../src/storage/space';

/** The simulated hypervisor's options, state and fault model (the driver is sim-driver.ts). */

export interface SimDriverOptions {
  /** Seed of the fault-injection PRNG: one seed, one sequence of faults. */
  seed?: number;
  /** Host throughput of every job (a job's own `speed` may only lower it). Default 1 GiB/s. */
  bytesPerSecond?: number;
  faults?: {
    /** Share of jobs that conclude with 'Input/output error' part-way. */
    jobErrorRate?: number;
    /** Share of jobs that disappear from listJobs without a trace. */
    vanishRate?: number;
    /** Delay of every driver call. */
    slowHostMs?: number;
  };
  /**
   * Rewrite the header of the overlay above an intermediate commit's top (`qemu-img rebase -u`),
   * as QEMU does. Only for volumes that exist as real qcow2 files.
   */
  rewriteBackingHeaders?: boolean;
  /** Free bytes of every base's file system, for measureCommitSpace (default: plenty). */
  freeBytes?: number;
  /**
   * Simulated seconds per real second for job progress (default 1): at 60 a 10-minute job ends
   * after 10 real seconds. Poll timeouts and slowHostMs stay in real time.
   */
  timeScale?: number;
}

export interface SimDisk {
  diskId: string;
  /** Absolute paths, active layer first. */
  volumes: string[];
  /** The `len` of a commit on this disk. Default 16 MiB. */
  sizeBytes?: number;
}

export interface SimVolume {
  path: string;
  format: string;
  file: string;
}
export interface SimNode {
  path: string;
  kind: 'format' | 'file';
}
export interface Disk {
  diskId: string;
  chain: SimVolume[];
  sizeBytes: number;
}
export type Fault = { kind: 'error' | 'vanish'; at: number } | { kind: 'vanishAfterEnd' };
export interface Job {
  id: string;
  disk: Disk;
  top: SimVolume;
  base: SimVolume;
  active: boolean;
  backingFile?: string;
  status: JobStatus;
  len: number;
  /** Bytes done at `since`; while running, the offset grows from there at the job's rate. */
  done: number;
  since: number;
  speed: number;
  /** Copies nothing until SimDriver.releaseJobs (a lab's job that must outlast whatever it waits for). */
  held?: boolean;
  error?: string;
  fault?: Fault;
  timer?: NodeJS.Timeout;
}
export interface Vm {
  disks: Map<string, Disk>;
  nodes: Map<string, SimNode>;
  jobs: Map<string, Job>;
  gone: boolean;
}

export function rollFault(
  rng: () => number,
  faults: SimDriverOptions['faults'],
  len: number,
  active: boolean,
): Fault | undefined {
  const f = faults ?? {};
  if (rng() < (f.jobErrorRate ?? 0)) return { kind: 'error', at: Math.floor(rng() * len) };
  if (rng() < (f.vanishRate ?? 0)) {
    // A finished intermediate commit that vanishes looks like one auto-dismissed: top dropped.
    return !active && rng() < 0.5 ? { kind: 'vanishAfterEnd' } : { kind: 'vanish', at: Math.floor(rng() * len) };
  }
  return undefined;
}

export function refuseVerb(command: string, job: Job, verb: string): never {
  throw new QmpCommandError(
    command,
    'GenericError',
    `Job '${job.id}' in state '${job.status}' cannot accept command verb '${verb}'`,
  );
}

/** A small seeded PRNG (mulberry32). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The simulation's time: real time since construction, times `timeScale`, and real-time sleeps
 * that close() wakes at once.
 */
export class SimClock {
  private readonly epoch = Date.now();
  private readonly sleepers = new Set<{ timer: NodeJS.Timeout; wake: () => void }>();

  constructor(readonly timeScale: number) {
    if (!(timeScale > 0)) throw new RangeError(`timeScale must be positive, got ${timeScale}`);
  }

  /** Simulated milliseconds. */
  now(): number {
    return this.epoch + (Date.now() - this.epoch) * this.timeScale;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const sleeper = {
        timer: setTimeout(() => sleeper.wake(), ms),
        wake: () => {
          clearTimeout(sleeper.timer);
          this.sleepers.delete(sleeper);
          resolve();
        },
      };
      this.sleepers.add(sleeper);
    });
  }

  wakeAll(): void {
    for (const s of this.sleepers) s.wake();
  }
}

/** A VM with one node pair (format, file) per volume, named by `nextNode()`. */
export function newVm(disks: SimDisk[], nextNode: () => number): Vm {
  const vm: Vm = { disks: new Map(), nodes: new Map(), jobs: new Map(), gone: false };
  for (const d of disks) {
    const chain = d.volumes.map((path) => {
      const n = nextNode();
      const v = { path, format: `sim-fmt-${n}`, file: `sim-file-${n}` };
      vm.nodes.set(v.format, { path, kind: 'format' });
      vm.nodes.set(v.file, { path, kind: 'file' });
      return v;
    });
    vm.disks.set(d.diskId, { diskId: d.diskId, chain, sizeBytes: d.sizeBytes ?? 16 * 1024 * 1024 });
  }
  return vm;
}

/** QEMU's refusals of a blockdev-del: an unknown node, or one a chain, a job or a format node uses. */
export function checkNodeDelete(vm: Vm, nodeName: string): void {
  const node = vm.nodes.get(nodeName);
  const fail = (desc: string): never => {
    throw new QmpCommandError('blockdev-del', 'GenericError', desc);
  };
  if (!node) return fail(`Failed to find node with node-name='${nodeName}'`);
  const inChain = [...vm.disks.values()].some((d) => d.chain.some((v) => v.format === nodeName));
  const inJob = [...vm.jobs.values()].some(
    (j) => j.status !== 'concluded' && (j.top.format === nodeName || j.base.format === nodeName),
  );
  const formatAbove =
    node.kind === 'file' && [...vm.nodes.values()].some((n) => n.kind === 'format' && n.path === node.path);
  if (inChain || inJob || formatAbove) fail(`Block device ${nodeName} is in use`);
}

/**
 * The job a block-commit starts at `now`, with the fault `roll` picks for it; QEMU's refusals of
 * the command are checked first, as QEMU checks them.
 */
export function commitJob(
  vm: Vm,
  r: StartCommit,
  now: number,
  roll: (len: number, active: boolean) => Fault | undefined,
): Job {
  const fail = (desc: string): never => {
    throw new QmpCommandError('block-commit', 'GenericError', desc);
  };
  const disk = [...vm.disks.values()].find((d) => d.chain[0].format === r.deviceNode);
  if (!disk) return fail(`Cannot find device='${r.deviceNode}' nor node-name='${r.deviceNode}'`);
  if (vm.jobs.has(r.jobId)) fail(`Job ID '${r.jobId}' already in use`);
  if ([...vm.jobs.values()].some((j) => j.disk === disk && j.status !== 'concluded')) {
    fail(`Node '${r.deviceNode}' is busy: block device is in use by block job: commit`);
  }
  const topIndex = disk.chain.findIndex((v) => v.format === r.topNode);
  const baseIndex = disk.chain.findIndex((v) => v.format === r.baseNode);
  if (topIndex < 0) fail(`Cannot find device='' nor node-name='${r.topNode}'`);
  if (baseIndex <= topIndex) fail(`Node '${r.baseNode}' is not a backing image of '${r.topNode}'`);
  if (topIndex === 0 && r.backingFile !== undefined) fail("'backing-file' specified, but 'top' is the active layer");
  if (r.speed < 0) fail("Parameter 'speed' expects a non negative value");
  const active = topIndex === 0;
  return {
    id: r.jobId,
    disk,
    top: disk.chain[topIndex],
    base: disk.chain[baseIndex],
    active,
    backingFile: r.backingFile,
    status: 'running',
    len: disk.sizeBytes,
    done: 0,
    since: now,
    speed: r.speed,
    fault: roll(disk.sizeBytes, active),
  };
}

/** Who waits for a VM's next job change (nextJobChange), woken by every change the driver makes. */
export class JobChangeWaiters {
  private readonly byVm = new Map<string, Set<() => void>>();

  /** Armed at once; settles on the VM's next change, after `timeoutMs`, or when `signal` aborts. */
  next(vmId: string, timeoutMs: number, signal?: AbortSignal): { promise: Promise<void>; cancel: () => void } {
    const set = this.byVm.get(vmId) ?? new Set<() => void>();
    this.byVm.set(vmId, set);
    let done = (): void => undefined;
    const promise = new Promise<void>((resolve) => {
      const timer = setTimeout(() => done(), timeoutMs);
      done = () => {
        clearTimeout(timer);
        set.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      set.add(done);
      if (signal?.aborted) done();
      else signal?.addEventListener('abort', done, { once: true });
    });
    return { promise, cancel: done };
  }

  wake(vmId: string): void {
    for (const done of [...(this.byVm.get(vmId) ?? [])]) done();
  }

  wakeAll(): void {
    for (const vmId of this.byVm.keys()) this.wake(vmId);
  }
}

/** The commit's `len` (the disk's size) as the growth bound; free space as the driver was told. */
export function commitSpace(vmId: string, vm: Vm, q: CommitSpaceQuery, freeBytes?: number): CommitSpace {
  const disk = [...vm.disks.values()].find((d) => d.chain.some((v) => v.path === q.topPath));
  if (!disk) throw new Error(`VM ${vmId} has no volume ${q.topPath}`);
  const growthBytes = disk.sizeBytes;
  const marginBytes = commitSpaceMargin(growthBytes);
  return {
    topAllocatedBytes: disk.sizeBytes,
    growthBytes,
    marginBytes,
    neededBytes: growthBytes + marginBytes,
    freeBytes: freeBytes ?? Number.MAX_SAFE_INTEGER,
    baseDir: path.dirname(q.basePath),
  };
}

/** What QEMU does to the overlay above an intermediate commit's top: its backing name, rewritten. */
export async function rewriteBackingHeader(overlay: string, backing: string): Promise<void> {
  await promisify(execFile)('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, overlay]);
}

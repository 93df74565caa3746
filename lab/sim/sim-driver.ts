import type { CommitSpace } from '../../src/domain/commit';
import type { GuestIo } from '../../src/domain/speed';
import type {
  BlockJob,
  CommitSpaceQuery,
  DiskChain,
  HypervisorDriver,
  StartCommit,
  VmState,
} from '../../src/drivers/driver';
import { DiskNotFoundError, VmGoneError, VmNotFoundError } from '../../src/drivers/errors';
import { QmpCommandError } from '../../src/drivers/qmp/errors';
import { releaseNodes } from '../../src/drivers/qmp/release-nodes';
import {
  checkNodeDelete,
  commitJob,
  commitSpace,
  type Job,
  JobChangeWaiters,
  mulberry32,
  newVm,
  refuseVerb,
  rewriteBackingHeader,
  rollFault,
  SimClock,
  type SimDisk,
  type SimDriverOptions,
  type Vm,
} from './sim-model';

export type { SimDisk, SimDriverOptions } from './sim-model';

/**
 * An in-memory hypervisor with QEMU's block-job semantics as seen through QmpDriver: jobs start
 * with auto-dismiss off and stay `concluded` until dismissed, an active commit waits in `ready`
 * for its pivot, a cancel in `ready` concludes without pivot and without error, removed nodes
 * stay open until deleted. Jobs advance in real time; close() clears every timer.
 */
export class SimDriver implements HypervisorDriver {
  /** When each job concluded (wall clock, ms), by `<vmId>/<jobId>`: benchmarks time what follows. */
  readonly concludedAt = new Map<string, number>();
  private readonly vms = new Map<string, Vm>();
  private readonly waiters = new JobChangeWaiters();
  private readonly rng: () => number;
  private readonly bytesPerSecond: number;
  private holding?: (vmId: string) => boolean;
  private readonly clock: SimClock;
  private nextNode = 0;
  private closed = false;

  constructor(private readonly opts: SimDriverOptions = {}) {
    this.rng = mulberry32(opts.seed ?? 1);
    this.bytesPerSecond = opts.bytesPerSecond ?? 1024 ** 3;
    this.clock = new SimClock(opts.timeScale ?? 1);
  }

  /** Starts (or restarts) a VM with the given disks; a restarted VM has no jobs. */
  addVm(vmId: string, disks: SimDisk[]): void {
    for (const job of this.vms.get(vmId)?.jobs.values() ?? []) clearTimeout(job.timer);
    this.vms.set(
      vmId,
      newVm(disks, () => this.nextNode++),
    );
  }

  /** QEMU dies: every later call for this VM throws VmGoneError. */
  removeVm(vmId: string): void {
    const vm = this.vms.get(vmId);
    if (!vm) return;
    vm.gone = true;
    for (const job of vm.jobs.values()) clearTimeout(job.timer);
    this.notify(vmId);
  }

  /** Test hook: the job concludes now with `error`, chain unchanged. */
  failJob(vmId: string, jobId: string, error: string): void {
    const job = this.liveVm(vmId).jobs.get(jobId);
    if (!job || job.status === 'concluded') throw new Error(`no running job ${jobId} on ${vmId}`);
    this.conclude(vmId, job, error);
  }

  /** Test hook: the job disappears from listJobs without a trace, chain unchanged. */
  vanishJob(vmId: string, jobId: string): void {
    const vm = this.liveVm(vmId);
    clearTimeout(vm.jobs.get(jobId)?.timer);
    vm.jobs.delete(jobId);
    this.notify(vmId);
  }

  /** A simulated VM that was never added, or is gone, does not run; its definition is the caller's. */
  async vmState(vmId: string): Promise<VmState> {
    const vm = this.vms.get(vmId);
    return vm && !vm.gone ? { running: true } : { running: false, definition: 'caller' };
  }

  definedActive(vmId: string): Promise<string> {
    return Promise.reject(new Error(`simulated VM ${vmId} keeps no definition`));
  }

  redefineActive(vmId: string): Promise<void> {
    return Promise.reject(new Error(`simulated VM ${vmId} keeps no definition`));
  }

  async readChain(vmId: string, diskId: string): Promise<DiskChain> {
    const chain = (await this.readAllChains(vmId)).find((c) => c.diskId === diskId);
    if (!chain) throw new DiskNotFoundError(`VM ${vmId} has no disk ${diskId}`);
    return chain;
  }

  async readAllChains(vmId: string): Promise<DiskChain[]> {
    const vm = await this.enter(vmId);
    return [...vm.disks.values()].map((d) => ({
      diskId: d.diskId,
      rootNode: d.chain[0].format,
      volumes: d.chain.map((v) => ({ path: v.path, nodeName: v.format })),
    }));
  }

  async listJobs(vmId: string): Promise<BlockJob[]> {
    const vm = await this.enter(vmId);
    return [...vm.jobs.values()].map((j) => ({
      id: j.id,
      type: 'commit',
      status: j.status,
      offset: this.offsetOf(j),
      len: j.len,
      ...(j.error === undefined ? {} : { error: j.error }),
    }));
  }

  async startCommit(vmId: string, r: StartCommit): Promise<void> {
    const vm = await this.enter(vmId);
    const job = commitJob(vm, r, this.clock.now(), (len, active) => rollFault(this.rng, this.opts.faults, len, active));
    job.held = this.holding?.(vmId) ?? false;
    vm.jobs.set(job.id, job);
    this.schedule(vmId, job);
    this.notify(vmId);
  }

  /** Jobs started on the VMs `hold` names from now on copy nothing until releaseJobs. */
  holdJobs(hold: (vmId: string) => boolean): void {
    this.holding = hold;
  }

  /** Every held job copies from now on, at the host's rate; no job is held any more. */
  releaseJobs(): void {
    this.holding = undefined;
    for (const [vmId, vm] of this.vms)
      for (const job of vm.jobs.values()) {
        if (!job.held) continue;
        job.held = false;
        if (job.status === 'running') this.schedule(vmId, job);
      }
  }

  async completeJob(vmId: string, jobId: string): Promise<void> {
    const job = this.jobOf(await this.enter(vmId), jobId, 'block-job-complete');
    if (job.status !== 'ready') refuseVerb('block-job-complete', job, 'complete');
    job.status = 'waiting';
    this.notify(vmId);
    this.later(vmId, job, 0, () => this.finish(vmId, job));
  }

  async cancelJob(vmId: string, jobId: string): Promise<void> {
    const job = this.jobOf(await this.enter(vmId), jobId, 'block-job-cancel');
    if (job.status === 'concluded') refuseVerb('block-job-cancel', job, 'cancel');
    if (job.status === 'waiting' || job.status === 'pending') return; // already ending: too late to cancel
    const inReady = job.status === 'ready';
    job.done = this.offsetOf(job);
    job.status = inReady ? 'waiting' : 'aborting';
    this.notify(vmId);
    this.later(vmId, job, 0, () => this.conclude(vmId, job, inReady ? undefined : 'Operation canceled'));
  }

  async dismissJob(vmId: string, jobId: string): Promise<void> {
    const vm = await this.enter(vmId);
    const job = vm.jobs.get(jobId);
    if (!job) return; // as QmpDriver: dismissing a missing job is a no-op
    if (job.status !== 'concluded') refuseVerb('job-dismiss', job, 'dismiss');
    vm.jobs.delete(jobId);
    this.notify(vmId);
  }

  async setSpeed(vmId: string, jobId: string, speed: number): Promise<void> {
    const job = this.jobOf(await this.enter(vmId), jobId, 'block-job-set-speed');
    if (speed < 0)
      throw new QmpCommandError(
        'block-job-set-speed',
        'GenericError',
        "Parameter 'speed' expects a non negative value",
      );
    job.done = this.offsetOf(job);
    job.since = this.clock.now();
    job.speed = speed;
    if (job.status === 'running') this.schedule(vmId, job);
  }

  /** A simulated VM has no guest: its disks do no I/O, so an adaptive job runs unlimited. */
  async guestIo(vmId: string): Promise<GuestIo> {
    await this.enter(vmId);
    return { readOps: 0, readNs: 0, writeOps: 0, writeNs: 0, flushOps: 0, flushNs: 0 };
  }

  async nodesHolding(vmId: string, path: string): Promise<string[]> {
    const vm = await this.enter(vmId);
    const held = [...vm.nodes.entries()].filter(([, n]) => n.path === path);
    return [...held.filter(([, n]) => n.kind === 'format'), ...held.filter(([, n]) => n.kind === 'file')].map(
      ([name]) => name,
    );
  }

  /** Nothing is cached in memory; an unknown node is refused as QEMU refuses it. */
  async flushNode(vmId: string, nodeName: string): Promise<void> {
    const vm = await this.enter(vmId);
    if (!vm.nodes.has(nodeName))
      throw new QmpCommandError(
        'human-monitor-command',
        'GenericError',
        `Cannot find device='' nor node-name='${nodeName}'`,
      );
  }

  /** The commit's `len` (the disk's size) as the growth bound; free space from the options. */
  async measureCommitSpace(vmId: string, q: CommitSpaceQuery): Promise<CommitSpace> {
    const vm = await this.enter(vmId);
    return commitSpace(vmId, vm, q, this.opts.freeBytes);
  }

  async deleteNode(vmId: string, nodeName: string): Promise<void> {
    const vm = await this.enter(vmId);
    checkNodeDelete(vm, nodeName);
    vm.nodes.delete(nodeName);
  }

  releaseVolume = (vmId: string, path: string): Promise<void> => releaseNodes(this, vmId, path);
  /** No process of its own: nothing may hold a simulated VM's files. */
  hypervisorPids = (vmId: string): Promise<number[]> => this.enter(vmId).then(() => []);

  async nextJobChange(vmId: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    // Armed at once, so a change made right after this call is not missed.
    const changed = this.waiters.next(vmId, timeoutMs, signal);
    try {
      await this.enter(vmId);
    } catch (err) {
      changed.cancel();
      throw err;
    }
    await changed.promise;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const vm of this.vms.values()) for (const job of vm.jobs.values()) clearTimeout(job.timer);
    this.waiters.wakeAll();
    this.clock.wakeAll();
  }

  private async enter(vmId: string): Promise<Vm> {
    const delay = this.opts.faults?.slowHostMs ?? 0;
    if (delay > 0 && !this.closed) await this.clock.sleep(delay);
    return this.liveVm(vmId);
  }

  private liveVm(vmId: string): Vm {
    if (this.closed) throw new Error('SimDriver is closed');
    const vm = this.vms.get(vmId);
    if (!vm) throw new VmNotFoundError(`VM ${vmId} does not run on this host`);
    if (vm.gone) throw new VmGoneError(`VM ${vmId} is gone: its QEMU no longer answers`);
    return vm;
  }

  private jobOf(vm: Vm, jobId: string, command: string): Job {
    const job = vm.jobs.get(jobId);
    if (!job) throw new QmpCommandError(command, 'DeviceNotActive', `Block job '${jobId}' not found`);
    return job;
  }

  private notify(vmId: string): void {
    this.waiters.wake(vmId);
  }

  private rateOf(job: Job): number {
    if (job.held) return 0;
    return job.speed > 0 ? Math.min(job.speed, this.bytesPerSecond) : this.bytesPerSecond;
  }

  private offsetOf(job: Job): number {
    if (job.status !== 'running') return job.done;
    return Math.min(job.len, Math.floor(job.done + (this.rateOf(job) * (this.clock.now() - job.since)) / 1000));
  }

  /** Sets the timer for the job's next event while running: a fault, or the end of the copy. */
  private schedule(vmId: string, job: Job): void {
    const target = job.fault && job.fault.kind !== 'vanishAfterEnd' ? job.fault.at : job.len;
    const now = this.offsetOf(job);
    job.done = now;
    job.since = this.clock.now();
    if (this.rateOf(job) === 0) return clearTimeout(job.timer);
    this.later(vmId, job, (Math.max(0, target - now) / this.rateOf(job)) * 1000, () => {
      job.done = target;
      job.since = this.clock.now();
      if (job.fault?.kind === 'error') return this.conclude(vmId, job, 'Input/output error');
      if (job.fault?.kind === 'vanish') return this.vanishJob(vmId, job.id);
      if (job.active) {
        job.status = 'ready';
        return this.notify(vmId);
      }
      job.status = 'waiting';
      return this.finish(vmId, job);
    });
  }

  /** Runs `fn` after `ms` simulated milliseconds. */
  private later(vmId: string, job: Job, ms: number, fn: () => void | Promise<void>): void {
    clearTimeout(job.timer);
    job.timer = setTimeout(() => {
      if (!this.closed && !this.vms.get(vmId)?.gone && this.vms.get(vmId)?.jobs.get(job.id) === job) void fn();
    }, ms / this.clock.timeScale);
  }

  /** The commit's graph change: top (and anything between it and base) leaves the chain; then conclude. */
  private async finish(vmId: string, job: Job): Promise<void> {
    const chain = job.disk.chain;
    const topIndex = chain.indexOf(job.top);
    const baseIndex = chain.indexOf(job.base);
    if (this.opts.rewriteBackingHeaders && topIndex > 0) {
      const backing = job.backingFile ?? job.base.path; // QEMU writes the absolute path unless told
      try {
        await rewriteBackingHeader(chain[topIndex - 1].path, backing);
      } catch (err) {
        return this.conclude(vmId, job, `cannot rewrite backing file: ${String(err)}`);
      }
      if (this.closed || job.status !== 'waiting' || this.vms.get(vmId)?.jobs.get(job.id) !== job) return;
    }
    chain.splice(topIndex, baseIndex - topIndex);
    if (job.fault?.kind === 'vanishAfterEnd') return this.vanishJob(vmId, job.id);
    this.conclude(vmId, job);
  }

  private conclude(vmId: string, job: Job, error?: string): void {
    clearTimeout(job.timer);
    job.done = this.offsetOf(job);
    job.status = 'concluded';
    if (error !== undefined) job.error = error;
    this.concludedAt.set(`${vmId}/${job.id}`, Date.now());
    this.notify(vmId);
  }
}

// Stryker disable all: mutation testing covers only the code between the restore and disable markers below, the code that decides what is written or deleted
import * as path from 'node:path';

import type { CommitSpace } from '../../domain/commit';
import type { GuestIo } from '../../domain/speed';
import { measureCommitSpace } from '../../storage/space';
import type { BlockJob, CommitSpaceQuery, DiskChain, HypervisorDriver, StartCommit, VmState } from '../driver';
import { DiskNotFoundError, VmGoneError, VmNotFoundError } from '../errors';
import { parseBlkStat } from './blkstat';
import { parseBlockJobInfo } from './block-job-info';
import { DomainDefinition } from './definition';
import { domainPids } from './domain-pids';
import { diskIdOf, type DomainDisk, layerName, parseDomainDisks, parseLayerName } from './domain-xml';
import { LibvirtEvents } from './events';
import { type JobRecord, JobRecords } from './job-records';
import { Virsh, VirshCommandError } from './virsh';

export interface LibvirtDriverOptions {
  /** libvirt connection URI, e.g. `qemu:///system`. */
  uri: string;
  /** Where the driver keeps its job records (`<runDir>/<vmId>/libvirt-jobs/`). */
  runDir: string;
  /** Where libvirt's QEMU driver writes `<domain>.pid` (qemu:///system: /run/libvirt/qemu). */
  pidDir?: string;
}

/**
 * The hypervisor driver for VMs that libvirt manages: every change of a disk goes through
 * libvirt (`virsh blockcommit`, `blockjob --pivot/--abort/--bandwidth`), so libvirt's view of the
 * chain stays right and the domain untainted. A VM is a domain (by name), a disk its `<serial>`
 * (else its target), a layer `vda[N]`. libvirt finalizes and dismisses jobs and detaches removed
 * layers itself; a job that ended is known by the chain libvirt reports (its record, see
 * libvirt/job-records.ts, says what to look for), never by its absence alone.
 */
export class LibvirtDriver implements HypervisorDriver {
  private readonly virsh: Virsh;
  private readonly definition: DomainDefinition;
  private readonly events: LibvirtEvents;
  private readonly records: JobRecords;
  private readonly pidDir: string;
  /** Domains this driver has seen: one that is no longer there is gone, not unknown. */
  private readonly seen = new Set<string>();

  constructor(opts: LibvirtDriverOptions) {
    this.virsh = new Virsh(opts.uri);
    this.definition = new DomainDefinition(this.virsh);
    this.events = new LibvirtEvents(opts.uri);
    this.records = new JobRecords(opts.runDir);
    this.pidDir = opts.pidDir ?? '/run/libvirt/qemu';
  }

  vmState(vmId: string): Promise<VmState> {
    return this.definition.vmState(vmId);
  }

  definedActive(vmId: string, diskId: string): Promise<string> {
    return this.definition.definedActive(vmId, diskId);
  }

  redefineActive(vmId: string, diskId: string, from: string, to: string): Promise<void> {
    return this.definition.redefineActive(vmId, diskId, from, to);
  }

  // Stryker restore all
  async readChain(vmId: string, diskId: string): Promise<DiskChain> {
    const chain = (await this.readAllChains(vmId)).find((c) => c.diskId === diskId);
    if (!chain) throw new DiskNotFoundError(`domain ${vmId} has no disk ${diskId}`);
    return chain;
  }

  async readAllChains(vmId: string): Promise<DiskChain[]> {
    return (await this.disks(vmId)).map(chainOf);
  }

  async listJobs(vmId: string): Promise<BlockJob[]> {
    // The jobs first, the chain after: a job libvirt no longer lists has its end in that chain.
    const targets = (await this.disks(vmId)).map((d) => d.target);
    const infos = await Promise.all(
      targets.map(async (t) => parseBlockJobInfo(await this.run(vmId, ['blockjob', vmId, t, '--info', '--raw']))),
    );
    const [disks, records] = await Promise.all([this.disks(vmId), this.records.all(vmId)]);
    const jobs: BlockJob[] = [];
    for (const [i, target] of targets.entries()) {
      const info = infos[i];
      const record = records.find((r) => r.target === target);
      const disk = disks.find((d) => d.target === target);
      if (info) {
        const ready = disk?.mirror?.ready === true;
        jobs.push({
          id: record?.jobId ?? `libvirt.${target}`,
          type: jobType(info.type),
          status: ready ? 'ready' : 'running',
          // Ready means in sync: libvirt may still show cur one below end.
          offset: ready ? info.end : info.cur,
          len: info.end,
        });
      } else if (record && disk) {
        jobs.push(this.endedJob(vmId, record, disk));
      }
    }
    return jobs;
  }

  async startCommit(vmId: string, r: StartCommit): Promise<void> {
    // The device is named by its active layer (the chain's rootNode) or by its target.
    const device = parseLayerName(r.deviceNode)?.target ?? r.deviceNode;
    const top = parseLayerName(r.topNode);
    const base = parseLayerName(r.baseNode);
    const refuse = (why: string) => new VirshCommandError(['blockcommit', vmId, device], why);
    if (!top || !base || top.target !== device || base.target !== device)
      throw refuse(`layers ${r.topNode} and ${r.baseNode} are not layers of disk ${device}`);
    const disk = (await this.disks(vmId)).find((d) => d.target === device);
    if (!disk) throw new DiskNotFoundError(`domain ${vmId} has no disk ${device}`);
    const topLayer = disk.layers.find((l) => l.index === top.index);
    const baseLayer = disk.layers.find((l) => l.index === base.index);
    if (!topLayer || !baseLayer) throw refuse(`${r.topNode} or ${r.baseNode} is not in the chain`);
    const kind = topLayer === disk.layers[0] ? 'active' : 'intermediate';
    // libvirt writes the base's name relative to the overlay as the chain had it: that is the only one it offers.
    if (r.backingFile !== undefined && (kind === 'active' || r.backingFile !== path.basename(baseLayer.path)))
      throw refuse(`backing file ${r.backingFile} cannot be written by libvirt for this commit`);
    const records = await this.records.all(vmId);
    const same = records.find((x) => x.jobId === r.jobId);
    if (same && same.target !== device) throw refuse(`job id ${r.jobId} is in use on disk ${same.target}`);
    const previous = records.find((x) => x.target === device);

    const record: JobRecord = {
      jobId: r.jobId,
      target: device,
      kind,
      topPath: topLayer.path,
      basePath: baseLayer.path,
    };
    const args = ['blockcommit', vmId, device, '--top', r.topNode, '--base', r.baseNode];
    if (kind === 'active') args.push('--active');
    if (r.backingFile !== undefined) args.push('--keep-relative');
    if (r.speed > 0) args.push('--bandwidth', String(r.speed), '--bytes');
    // Recorded before the start: an agent that dies just after still knows the job by its id.
    await this.records.write(vmId, record);
    try {
      await this.run(vmId, args);
    } catch (err) {
      if (previous) await this.records.write(vmId, previous);
      else await this.records.remove(vmId, device);
      throw err;
    }
    this.events.forget(vmId, device);
  }

  async completeJob(vmId: string, jobId: string): Promise<void> {
    await this.run(vmId, ['blockjob', vmId, await this.targetOf(vmId, jobId), '--pivot']);
  }

  async cancelJob(vmId: string, jobId: string): Promise<void> {
    const target = await this.targetOf(vmId, jobId);
    const record = await this.records.byId(vmId, jobId);
    const job = (await this.listJobs(vmId)).find((j) => j.id === jobId);
    // A cancel in ready is a clean end without pivot, as QEMU reports it; before, an end in error.
    if (record && job && job.status !== 'concluded')
      await this.records.write(vmId, { ...record, abortedIn: job.status === 'ready' ? 'ready' : 'running' });
    await this.run(vmId, ['blockjob', vmId, target, '--abort']);
  }

  /** libvirt dismisses jobs itself: what goes here is the driver's record of an ended job. */
  async dismissJob(vmId: string, jobId: string): Promise<void> {
    const record = await this.records.byId(vmId, jobId);
    if (!record) return;
    const job = (await this.listJobs(vmId)).find((j) => j.id === jobId);
    if (job && job.status !== 'concluded')
      throw new VirshCommandError(['dismiss', vmId, jobId], `job ${jobId} is ${job.status}, not concluded`);
    await this.records.remove(vmId, record.target);
    this.events.forget(vmId, record.target);
  }

  async setSpeed(vmId: string, jobId: string, speed: number): Promise<void> {
    const target = await this.targetOf(vmId, jobId);
    await this.run(vmId, ['blockjob', vmId, target, '--bandwidth', String(speed), '--bytes']);
  }

  /** The layers of the domain's chains that are `path`: libvirt lets go of a removed layer itself. */
  async nodesHolding(vmId: string, file: string): Promise<string[]> {
    return (await this.disks(vmId)).flatMap((d) =>
      d.layers.filter((l) => l.path === file).map((l) => layerName(d.target, l.index)),
    );
  }

  async releaseVolume(vmId: string, file: string): Promise<void> {
    const held = await this.nodesHolding(vmId, file);
    if (held.length > 0)
      throw new VirshCommandError(
        ['release', vmId, file],
        `${file} is still a layer of the domain (${held.join(', ')})`,
      );
  }
  // Stryker disable all

  /** The guest's I/O counters on the disk (the adaptive speed's input), by its target. */
  async guestIo(vmId: string, diskId: string): Promise<GuestIo> {
    const disk = (await this.disks(vmId)).find((d) => diskIdOf(d) === diskId);
    if (!disk) throw new DiskNotFoundError(`domain ${vmId} has no disk ${diskId}`);
    return parseBlkStat(await this.run(vmId, ['domblkstat', vmId, disk.target]));
  }

  /**
   * libvirt offers no flush of one layer short of its monitor passthrough, which taints the domain:
   * libvirt reopens a commit's base read-only (which flushes it) when it finishes the job itself.
   */
  async flushNode(vmId: string, _nodeName: string): Promise<void> {
    await this.disks(vmId);
  }

  async measureCommitSpace(vmId: string, q: CommitSpaceQuery): Promise<CommitSpace> {
    await this.disks(vmId);
    return measureCommitSpace(q.topPath, q.basePath);
  }

  hypervisorPids(vmId: string): Promise<number[]> {
    return domainPids(this.pidDir, vmId);
  }

  async nextJobChange(vmId: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return;
    const change = this.events.nextChange(vmId, timeoutMs, signal);
    try {
      // Armed first: a change while the domain is looked up still wakes the wait.
      await this.run(vmId, ['domstate', vmId]);
    } catch (err) {
      change.cancel();
      throw err;
    }
    await change.woken;
  }

  async close(): Promise<void> {
    this.events.close();
  }

  // Stryker restore all
  /** How a job libvirt no longer lists ended, read from the chain it reports now. */
  private endedJob(vmId: string, record: JobRecord, disk: DomainDisk): BlockJob {
    const paths = disk.layers.map((l) => l.path);
    const merged = !paths.includes(record.topPath) && paths.includes(record.basePath);
    const ending = this.events.ending(vmId, record.target);
    let error: string | undefined;
    if (!merged && record.abortedIn !== 'ready')
      error =
        ending === 'failed'
          ? 'block job failed (libvirt reported it failed); chain unchanged'
          : ending === 'canceled' || record.abortedIn === 'running'
            ? 'block job cancelled; chain unchanged'
            : 'block job ended and the chain still holds its top (libvirt did not report why)';
    return { id: record.jobId, type: 'commit', status: 'concluded', offset: 0, len: 0, ...(error ? { error } : {}) };
  }

  private async targetOf(vmId: string, jobId: string): Promise<string> {
    const record = await this.records.byId(vmId, jobId);
    if (record) return record.target;
    const m = /^libvirt\.(.+)$/.exec(jobId);
    if (m) return m[1];
    throw new VirshCommandError(['blockjob', vmId], `no block job ${jobId}`);
  }

  private async disks(vmId: string): Promise<DomainDisk[]> {
    return parseDomainDisks(await this.run(vmId, ['dumpxml', vmId]));
  }

  /** A virsh call on a domain: a domain seen before and missing now is gone (its QEMU ended). */
  private async run(vmId: string, args: string[]): Promise<string> {
    try {
      const out = await this.virsh.run(args);
      this.seen.add(vmId);
      return out;
    } catch (err) {
      if (err instanceof VmNotFoundError && this.seen.has(vmId))
        throw new VmGoneError(`domain ${vmId} is gone: ${err.message}`);
      if (err instanceof VirshCommandError && /domain is not running/i.test(err.detail))
        throw new VmGoneError(`domain ${vmId} does not run: ${err.detail}`);
      throw err;
    }
  }
}

function chainOf(d: DomainDisk): DiskChain {
  return {
    diskId: diskIdOf(d),
    rootNode: layerName(d.target, d.layers[0].index),
    volumes: d.layers.map((l) => ({ path: l.path, nodeName: layerName(d.target, l.index) })),
  };
}

function jobType(libvirtType: string): string {
  if (/commit/i.test(libvirtType)) return 'commit';
  if (/copy/i.test(libvirtType)) return 'mirror';
  if (/pull/i.test(libvirtType)) return 'stream';
  return libvirtType.toLowerCase();
}

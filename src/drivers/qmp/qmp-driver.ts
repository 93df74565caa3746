// Stryker disable all: mutation testing covers only the code between the restore and disable markers below, the code that decides what is written or deleted
import type { CommitSpace } from '../../domain/commit';
import { auxQmpSocketPath, qmpSocketPath } from '../../domain/layout';
import type { GuestIo } from '../../domain/speed';
import { measureCommitSpace } from '../../storage/space';
import type { BlockJob, CommitSpaceQuery, DiskChain, HypervisorDriver, StartCommit, VmState } from '../driver';
import { DiskNotFoundError, VmGoneError, VmNotFoundError } from '../errors';
import type { QmpClient } from './client';
import { QmpCommandError } from './errors';
import { vmQemuPids } from './qmp-pid';
import { QmpPool } from './qmp-pool';
import { releaseNodes } from './release-nodes';
import {
  deviceIdOf,
  flattenImageChain,
  nodeFilesOf,
  queryBlockSchema,
  queryBlockstatsSchema,
  queryJobsSchema,
  queryNamedBlockNodesSchema,
  resolveImageFilename,
} from './schemas';

/** The hypervisor driver for real QEMU, over each VM's QMP socket under the run directory. */
export class QmpDriver implements HypervisorDriver {
  private readonly pool: QmpPool;

  constructor(
    private readonly runDir: string,
    opts: { useAuxSocket?: boolean } = {},
  ) {
    this.pool = new QmpPool((vmId) =>
      opts.useAuxSocket ? auxQmpSocketPath(runDir, vmId) : qmpSocketPath(runDir, vmId),
    );
  }

  // Stryker restore all
  /** Running while its QEMU answers on the QMP socket (paused or not); a raw-QEMU VM's definition is the caller's. */
  async vmState(vmId: string): Promise<VmState> {
    try {
      await this.pool.with(vmId, (qmp) => qmp.execute('query-status', {}));
      return { running: true };
    } catch (err) {
      if (err instanceof VmNotFoundError || err instanceof VmGoneError) return { running: false, definition: 'caller' };
      throw err;
    }
  }

  definedActive(vmId: string): Promise<string> {
    return Promise.reject(new Error(`VM ${vmId}: a raw-QEMU VM's definition is kept by its caller, not on this host`));
  }

  redefineActive(vmId: string): Promise<void> {
    return Promise.reject(new Error(`VM ${vmId}: a raw-QEMU VM's definition is kept by its caller, not on this host`));
  }
  // Stryker disable all

  async readChain(vmId: string, diskId: string): Promise<DiskChain> {
    const chain = (await this.readAllChains(vmId)).find((c) => c.diskId === diskId);
    if (!chain) throw new DiskNotFoundError(`VM ${vmId} has no disk ${diskId}`);
    return chain;
  }

  // Stryker restore all
  async readAllChains(vmId: string): Promise<DiskChain[]> {
    return this.pool.with(vmId, async (qmp) => {
      const [blocks, nodes] = await Promise.all([
        qmp.executeParsed('query-block', {}, queryBlockSchema),
        qmp.executeParsed('query-named-block-nodes', { flat: true }, queryNamedBlockNodesSchema),
      ]);
      // A qcow2 node opened with an explicit `backing` may name its file by node: resolve through them.
      const nodeFiles = nodeFilesOf(nodes);
      const nodeOfFile = new Map<string, string>();
      for (const n of nodes)
        if (n.drv === 'qcow2') nodeOfFile.set(resolveImageFilename(n.file, nodeFiles), n['node-name']);
      const chains: DiskChain[] = [];
      for (const block of blocks) {
        const diskId = deviceIdOf(block);
        if (!diskId || !block.inserted) continue;
        const files = flattenImageChain(block.inserted.image, nodeFiles);
        chains.push({
          diskId,
          rootNode: block.inserted['node-name'],
          volumes: files.map((path) => ({ path, nodeName: nodeOfFile.get(path) ?? '' })),
        });
      }
      return chains;
    });
  }

  async listJobs(vmId: string): Promise<BlockJob[]> {
    const jobs = await this.pool.with(vmId, (qmp) => qmp.executeParsed('query-jobs', {}, queryJobsSchema));
    return jobs.map((j) => ({
      id: j.id,
      type: j.type,
      status: j.status,
      offset: j['current-progress'],
      len: j['total-progress'],
      ...(j.error === undefined ? {} : { error: j.error }),
    }));
  }
  // Stryker disable all

  async startCommit(vmId: string, r: StartCommit): Promise<void> {
    await this.pool.with(vmId, (qmp) =>
      qmp.execute('block-commit', {
        'job-id': r.jobId,
        device: r.deviceNode,
        'top-node': r.topNode,
        'base-node': r.baseNode,
        ...(r.backingFile === undefined ? {} : { 'backing-file': r.backingFile }),
        ...(r.speed > 0 ? { speed: r.speed } : {}),
        // Keep the concluded job, and its error, until cleanup reads and dismisses it.
        'auto-dismiss': false,
      }),
    );
  }

  async completeJob(vmId: string, jobId: string): Promise<void> {
    await this.pool.with(vmId, (qmp) => qmp.execute('block-job-complete', { device: jobId }));
  }

  async cancelJob(vmId: string, jobId: string): Promise<void> {
    await this.pool.with(vmId, (qmp) => qmp.execute('block-job-cancel', { device: jobId }));
  }

  async dismissJob(vmId: string, jobId: string): Promise<void> {
    await this.ignoringMissingJob(() => this.pool.with(vmId, (qmp) => qmp.execute('job-dismiss', { id: jobId })));
  }

  async setSpeed(vmId: string, jobId: string, speed: number): Promise<void> {
    await this.pool.with(vmId, (qmp) => qmp.execute('block-job-set-speed', { device: jobId, speed }));
  }

  /** The disk's device (the guest's view: its requests and their time), not a node of its chain. */
  async guestIo(vmId: string, diskId: string): Promise<GuestIo> {
    const all = await this.pool.with(vmId, (qmp) => qmp.executeParsed('query-blockstats', {}, queryBlockstatsSchema));
    const device = all.find((b) => deviceIdOf(b) === diskId);
    if (!device) throw new DiskNotFoundError(`VM ${vmId} has no disk ${diskId}`);
    const s = device.stats;
    return {
      readOps: s.rd_operations,
      readNs: s.rd_total_time_ns,
      writeOps: s.wr_operations,
      writeNs: s.wr_total_time_ns,
      flushOps: s.flush_operations,
      flushNs: s.flush_total_time_ns,
    };
  }

  // Stryker restore all
  async nodesHolding(vmId: string, path: string): Promise<string[]> {
    const nodes = await this.pool.with(vmId, (qmp) =>
      qmp.executeParsed('query-named-block-nodes', { flat: true }, queryNamedBlockNodesSchema),
    );
    const format = nodes
      .filter((n) => n.drv !== 'file' && resolveImageFilename(n.file) === path)
      .map((n) => n['node-name']);
    const file = nodes.filter((n) => n.drv === 'file' && n.file === path).map((n) => n['node-name']);
    return [...format, ...file];
  }

  async deleteNode(vmId: string, nodeName: string): Promise<void> {
    await this.pool.with(vmId, (qmp) => qmp.execute('blockdev-del', { 'node-name': nodeName }));
  }

  async releaseVolume(vmId: string, path: string): Promise<void> {
    await releaseNodes(this, vmId, path);
  }

  /** The QEMU that listens on the VM's QMP socket. */
  async hypervisorPids(vmId: string): Promise<number[]> {
    return vmQemuPids(this.runDir, vmId);
  }
  // Stryker disable all

  /**
   * QMP has no flush of one node; HMP's `qemu-io <node> "flush"` is QEMU's own way to ask for it.
   * Needed after an intermediate commit into a base opened read-write: QEMU 7.2 keeps the base's
   * new qcow2 mappings in its cache, so the file alone does not yet hold the committed data.
   */
  // Stryker restore all
  async flushNode(vmId: string, nodeName: string): Promise<void> {
    const reply = await this.pool.with(vmId, (qmp) =>
      qmp.execute('human-monitor-command', { 'command-line': `qemu-io ${nodeName} "flush"` }),
    );
    // QEMU answers a flush that worked with nothing; anything else is the flush's error, never ignored.
    if (reply !== '') throw new Error(`flush of node ${nodeName} failed: ${String(reply).trim()}`);
  }
  // Stryker disable all

  /**
   * The top's node is flushed first: QEMU keeps the active layer's new cluster mappings in its
   * metadata cache, and `qemu-img map` reads the file.
   */
  async measureCommitSpace(vmId: string, q: CommitSpaceQuery): Promise<CommitSpace> {
    await this.flushNode(vmId, q.topNode);
    return measureCommitSpace(q.topPath, q.basePath);
  }

  async nextJobChange(vmId: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    const qmp: QmpClient = await this.pool.get(vmId);
    if (signal?.aborted) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const unsubscribe = qmp.onEvent((e) => {
        if (e.event === 'JOB_STATUS_CHANGE' || e.event === 'BLOCK_JOB_READY' || e.event === 'BLOCK_JOB_COMPLETED')
          done();
      });
      const unsubscribeClose = qmp.onClose(done);
      signal?.addEventListener('abort', done, { once: true });
      function done(): void {
        clearTimeout(timer);
        unsubscribe();
        unsubscribeClose();
        signal?.removeEventListener('abort', done);
        resolve();
      }
    });
  }

  async close(): Promise<void> {
    await this.pool.close();
  }

  private async ignoringMissingJob(fn: () => Promise<unknown>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (err instanceof QmpCommandError && /not found/i.test(err.desc)) return;
      throw err;
    }
  }
}

import { type ApplicationFailure, condition, proxyActivities } from '@temporalio/workflow';

import type { EngineActivities } from '../activities/pickup';
import { diskMergeWorkflowId, hostJobTaskQueue } from '../config/names';
import { engineStepOptions } from '../config/policy';
import { failure } from '../domain/failures';
import type { DiskSpec, LiveMergeInput } from '../domain/input';
import { unreachableReason } from './failures';

/**
 * The pickup bound of disks whose workflow runs on the host's queue (`disk-on-host`): a workflow
 * on a queue nobody polls never runs, so it cannot fail by itself. Once
 * `options.hostPickupTimeoutSeconds` has passed, the engine ends those of the disks still running
 * that no host agent ever picked up, and each fails HostUnreachable, its volumes untouched. A
 * disk workflow picked up after that refuses by itself (disk-merge.ts), so the two never disagree.
 */
export class PickupWatch {
  /** The disks whose child has not ended yet, by id, in the request's order. */
  private readonly running = new Map<string, DiskSpec>();
  private readonly failDisk = new Map<string, (err: unknown) => void>();
  /** Disks whose pickup the engine is checking, and the failures their children ended with meanwhile. */
  private readonly checking = new Set<string>();
  private readonly endedWhileChecked = new Map<string, unknown>();

  constructor(private readonly input: LiveMergeInput) {}

  /**
   * The disk's end: its child's, except while the engine checks the disk's pickup. Then the
   * engine's answer decides, so that a terminated child's "Terminated" never becomes the reason.
   */
  track<T>(disk: DiskSpec, child: Promise<T>): Promise<T> {
    this.running.set(disk.diskId, disk);
    return new Promise<T>((resolve, reject) => {
      this.failDisk.set(disk.diskId, reject);
      child.then(resolve, (err: unknown) =>
        this.checking.has(disk.diskId) ? this.endedWhileChecked.set(disk.diskId, err) : reject(err),
      );
    }).finally(() => this.running.delete(disk.diskId));
  }

  /**
   * Settles the checked disks once the engine answered. An engine that could not tell (or a
   * cancelled merge) drops nothing: each disk then ends as its child does. Never rejects.
   */
  watch(): Promise<void> {
    return this.dropUnpicked().then(
      (dropped) => this.settleChecked(dropped),
      () => this.settleChecked(new Map()),
    );
  }

  /** Waits out the bound, then has the engine drop the disks still running that no agent picked up. */
  private async dropUnpicked(): Promise<Map<string, ApplicationFailure>> {
    const seconds = this.input.options.hostPickupTimeoutSeconds;
    if (await condition(() => this.running.size === 0, seconds * 1000)) return new Map();
    const byWorkflowId = new Map(
      [...this.running.values()].map((d) => [diskMergeWorkflowId(this.input.snapshotId, d.diskId), d]),
    );
    // While the engine looks, the end of a disk it terminates is its decision, not the child's.
    for (const d of byWorkflowId.values()) this.checking.add(d.diskId);
    const reason = unreachableReason(this.input.hostId, seconds, hostJobTaskQueue(this.input.hostId));
    const engine = proxyActivities<EngineActivities>(engineStepOptions);
    const dropped = await engine.dropUnpickedDisks({ workflowIds: [...byWorkflowId.keys()], reason });
    return new Map(
      dropped.flatMap((id) => {
        const d = byWorkflowId.get(id);
        return d
          ? [[d.diskId, failure('HostUnreachable', `disk ${d.diskId}: ${reason}; top volume ${d.topVolumeId} kept`)]]
          : [];
      }),
    );
  }

  /** Each checked disk ends now: dropped by the engine, or with what its child ended with meanwhile. */
  private settleChecked(dropped: Map<string, ApplicationFailure>): void {
    for (const diskId of this.checking) {
      const err = dropped.get(diskId) ?? this.endedWhileChecked.get(diskId);
      if (err !== undefined) this.failDisk.get(diskId)?.(err);
    }
    this.checking.clear();
  }
}

import { log, metricMeter, workflowInfo } from '@temporalio/workflow';

import { MERGE_METRICS } from '../config/metrics';
import type { DiskMergeInput } from '../domain/input';

export type DiskMergeOutcome = 'merged' | 'alreadyMerged' | 'failed' | 'cancelled';

/**
 * Records a disk's merge when it ends: duration, outcome and committed bytes, labelled with the
 * host that runs the VM, and one log line. Emitted by the engine worker's SDK meter, which skips
 * it on replay, so each disk merge counts once however often its history is replayed.
 */
export function recordDiskMerge(input: DiskMergeInput, outcome: DiskMergeOutcome, bytesCommitted: number): void {
  const durationSeconds = (Date.now() - workflowInfo().runStartTime.getTime()) / 1000;
  const tags = { host_id: input.hostId, outcome };
  metricMeter
    .createHistogram(MERGE_METRICS.duration, 'float', 's', 'disk merge time, start to outcome')
    .record(durationSeconds, tags);
  metricMeter.createCounter(MERGE_METRICS.outcomes, undefined, 'disk merges ended, by outcome').add(1, tags);
  if (bytesCommitted > 0) {
    metricMeter
      .createCounter(MERGE_METRICS.bytesCommitted, 'By', 'bytes committed by block jobs of merged disks')
      .add(bytesCommitted, { host_id: input.hostId });
  }
  const attrs = {
    hostId: input.hostId,
    vmId: input.vmId,
    diskId: input.disk.diskId,
    snapshotId: input.snapshotId,
    outcome,
    durationSeconds,
    bytesCommitted,
  };
  if (outcome === 'failed') log.warn('disk merge ended', attrs);
  else log.info('disk merge ended', attrs);
}

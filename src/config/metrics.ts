/**
 * The merge's own Prometheus metrics (besides the SDK's `temporal_*` ones). The engine worker
 * records them when a disk's merge ends (src/workflows/metrics.ts); each carries `host_id` (the
 * host that runs the VM) and, except bytes, `outcome` (merged, alreadyMerged, failed, cancelled).
 */
export const MERGE_METRICS = {
  /** Histogram, seconds: a disk's merge from its DiskMergeWorkflow start to its outcome. */
  duration: 'live_merge_disk_merge_duration_seconds',
  /** Counter, bytes: what the disks' block jobs committed (the job's length) for merged disks. */
  bytesCommitted: 'live_merge_bytes_committed',
  /** Counter: disk merges ended, by outcome. */
  outcomes: 'live_merge_disk_merges',
  /** Counter: speed changes of adaptive block jobs, by `direction` (up, down, unlimited, fixed); host agent. */
  speedChanges: 'live_merge_block_job_speed_changes',
  /** Gauge, bytes per second (0 is unlimited): the speed an adaptive job's controller set last, by `disk_id`; host agent. */
  speed: 'live_merge_block_job_speed',
} as const;

/** Buckets of the duration histogram: a small disk merges in seconds, a large one in hours. */
export const MERGE_DURATION_BUCKETS_SECONDS = [1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400];

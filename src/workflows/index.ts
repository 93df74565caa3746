export { LiveMergeWorkflow } from './live-merge';
export { DiskMergeWorkflow } from './disk-merge';
export { progressQuery, diskProgressSignal, setBandwidthUpdate } from './definitions';

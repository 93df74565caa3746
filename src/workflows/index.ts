export { diskProgressSignal, progressQuery, setBandwidthUpdate } from './definitions';
export { DiskMergeWorkflow } from './disk-merge';
export { LiveMergeWorkflow } from './live-merge';

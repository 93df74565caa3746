import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';

import { diskProgressSignalName, progressQueryName, setBandwidthUpdateName } from '../config/names';
import type { BandwidthRequest, BandwidthSet } from '../domain/bandwidth';
import type { DiskProgress, MergeProgress } from '../domain/progress';

export const progressQuery = defineQuery<MergeProgress>(progressQueryName);
export const diskProgressSignal = defineSignal<[DiskProgress]>(diskProgressSignalName);
/** New speed limit of the merge's block jobs; answers what each disk's job did with it. */
export const setBandwidthUpdate = defineUpdate<BandwidthSet, [BandwidthRequest]>(setBandwidthUpdateName);

import { defineQuery, defineSignal } from '@temporalio/workflow';
import { diskProgressSignalName, progressQueryName, type DiskProgress, type MergeProgress } from '../domain/progress';

export const progressQuery = defineQuery<MergeProgress>(progressQueryName);
export const diskProgressSignal = defineSignal<[DiskProgress]>(diskProgressSignalName);

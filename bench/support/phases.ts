import type { Client } from '@temporalio/client';

type HistoryEvent = NonNullable<
  Awaited<ReturnType<ReturnType<Client['workflow']['getHandle']>['fetchHistory']>>['events']
>[number];

/** Where a merge's time went, from its histories (server timestamps), ms each, in order. */
export type Phases = Record<string, number>;

const at = (e: HistoryEvent | undefined): number =>
  e ? Number(e.eventTime?.seconds ?? 0) * 1000 + (e.eventTime?.nanos ?? 0) / 1e6 : NaN;

/** Started and completed events of the first activity of a type. */
function activity(events: HistoryEvent[], type: string): { started?: HistoryEvent; completed?: HistoryEvent } {
  const scheduled = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === type);
  const id = String(scheduled?.eventId ?? '');
  return {
    started: events.find((e) => String(e.activityTaskStartedEventAttributes?.scheduledEventId ?? '-') === id),
    completed: events.find((e) => String(e.activityTaskCompletedEventAttributes?.scheduledEventId ?? '-') === id),
  };
}

/** The activity types of a DiskMergeWorkflow, in order (a same-shape workflow passes its own). */
export const MERGE_STEPS = ['merge', 'waitForBlockJob', 'verifyChain', 'deleteVolume', 'cleanup'];

/** Local activities (the steps of a disk workflow on its host's queue): type and end, by marker. */
function localSteps(events: HistoryEvent[]): Map<string, number> {
  const ends = new Map<string, number>();
  for (const e of events) {
    const data = e.markerRecordedEventAttributes?.details?.data?.payloads?.[0]?.data;
    if (!data) continue;
    const marker = JSON.parse(Buffer.from(data).toString()) as {
      activity_type?: string;
      complete_time?: { seconds?: number | string; nanos?: number } | string;
    };
    const t = marker.complete_time;
    const ms = typeof t === 'string' ? Date.parse(t) : t ? Number(t.seconds ?? 0) * 1000 + (t.nanos ?? 0) / 1e6 : at(e);
    if (marker.activity_type && !ends.has(marker.activity_type)) ends.set(marker.activity_type, ms);
  }
  return ends;
}

/** The workflow task that started after `t`: where a workflow woke up after a remote step ended. */
function taskAfter(events: HistoryEvent[], t: number): number {
  return at(events.find((e) => e.workflowTaskStartedEventAttributes && at(e) >= t));
}

/**
 * The phases of a one-disk merge: the client's start call, the workflows' own tasks between the
 * host steps, each host step (started to completed), and the result reaching the client. The
 * gaps between steps are the orchestration's cost; the wait is the block job itself. A disk
 * workflow that ran its short steps as local activities (on the host's queue) has no dispatch
 * between them: its phases are its pickup, the wait's dispatch, the task after the wait, and each
 * step from the end of the one before (a local step's start is not recorded).
 */

export async function mergePhases(
  client: Client,
  parentId: string,
  childId: string,
  clientStart: number,
  clientEnd: number,
  stepTypes: string[] = MERGE_STEPS,
): Promise<Phases> {
  const parent = (await client.workflow.getHandle(parentId).fetchHistory()).events ?? [];
  const child = (await client.workflow.getHandle(childId).fetchHistory()).events ?? [];
  const parentStarted = at(parent[0]);
  const childStarted = at(child[0]);
  const childClosed = at(child[child.length - 1]);
  const parentClosed = at(parent[parent.length - 1]);
  const phases: Phases = {
    'client start call': parentStarted - clientStart,
    'parent task, child start': childStarted - parentStarted,
  };
  const local = localSteps(child);
  if (local.size > 0) {
    const [merge, wait, verify, del, cleanup] = stepTypes;
    const pickedUp = taskAfter(child, childStarted);
    const w = activity(child, wait);
    const waitEnd = at(w.completed);
    const woke = taskAfter(child, waitEnd);
    Object.assign(phases, {
      'child pickup': pickedUp - childStarted,
      merge: local.get(merge)! - pickedUp,
      'wait (the block job) dispatch': at(w.started) - local.get(merge)!,
      'wait (the block job)': waitEnd - at(w.started),
      'task after the wait': woke - waitEnd,
      verify: local.get(verify)! - woke,
      delete: local.get(del)! - local.get(verify)!,
      cleanup: local.get(cleanup)! - local.get(del)!,
      'child completion': childClosed - local.get(cleanup)!,
    });
  } else {
    const steps = stepTypes.map((t) => activity(child, t));
    phases['child task, merge dispatch'] = at(steps[0].started) - childStarted;
    const names = ['merge', 'wait (the block job)', 'verify', 'delete', 'cleanup'];
    for (const [i, s] of steps.entries()) {
      if (i > 0) phases[`task, ${names[i]} dispatch`] = at(s.started) - at(steps[i - 1].completed);
      phases[names[i]] = at(s.completed) - at(s.started);
    }
    phases['child completion'] = childClosed - at(steps[steps.length - 1].completed);
  }
  phases['parent completion'] = parentClosed - childClosed;
  phases['result to client'] = clientEnd - parentClosed;
  for (const k of Object.keys(phases)) phases[k] = Math.round(phases[k]);
  return phases;
}

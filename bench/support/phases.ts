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

/**
 * The phases of a one-disk merge: the client's start call, the workflows' own tasks between the
 * host steps, each host step (started to completed), and the result reaching the client. The
 * gaps between steps are the orchestration's cost; the wait is the block job itself.
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
  const steps = stepTypes.map((t) => activity(child, t));
  const childClosed = at(child[child.length - 1]);
  const parentClosed = at(parent[parent.length - 1]);
  const phases: Phases = {
    'client start call': parentStarted - clientStart,
    'parent task, child start': childStarted - parentStarted,
    'child task, merge dispatch': at(steps[0].started) - childStarted,
  };
  const names = ['merge', 'wait (the block job)', 'verify', 'delete', 'cleanup'];
  for (const [i, s] of steps.entries()) {
    if (i > 0) phases[`task, ${names[i]} dispatch`] = at(s.started) - at(steps[i - 1].completed);
    phases[names[i]] = at(s.completed) - at(s.started);
  }
  phases['child completion'] = childClosed - at(steps[steps.length - 1].completed);
  phases['parent completion'] = parentClosed - childClosed;
  phases['result to client'] = clientEnd - parentClosed;
  for (const k of Object.keys(phases)) phases[k] = Math.round(phases[k]);
  return phases;
}

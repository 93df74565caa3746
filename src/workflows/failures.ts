import { TimeoutType } from '@temporalio/common';
import { ActivityFailure, ApplicationFailure, ChildWorkflowFailure, TimeoutFailure } from '@temporalio/workflow';
import type { z } from 'zod';

import { failure, FAILURES, type FailureType, type NonRetryableType } from '../domain/failures';
import { schemas } from './schemas';

/**
 * How the workflows check their inputs and read the failures of their steps and children. The
 * failure types themselves are in domain/failures.ts.
 */

/** Parses a workflow's input (or an update's); a bad one fails at once, naming each field. */
export function parseWorkflowInput<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success)
    throw failure('InvalidMergeInput', `invalid ${what}: ${schemas().input.describeIssues(parsed.error)}`);
  return parsed.data;
}

/** What an activity or child failed with, under the SDK's wrapper. */
function causeOf(err: unknown): unknown {
  return (err instanceof ActivityFailure || err instanceof ChildWorkflowFailure) && err.cause ? err.cause : err;
}

export function reasonOf(err: unknown): string {
  const cause = causeOf(err);
  return cause instanceof Error ? cause.message : String(cause);
}

/** The non-retryable failure type a step or child raised, when it raised one of the table's. */
export function nonRetryableTypeOf(err: unknown): NonRetryableType | undefined {
  const cause = causeOf(err);
  const type = cause instanceof ApplicationFailure ? cause.type : undefined;
  if (!type || !(type in FAILURES)) return undefined;
  return FAILURES[type as FailureType].retryable ? undefined : (type as NonRetryableType);
}

/** True when no worker picked the activity up in time (a host queue nobody polls). */
export function isPickupTimeout(err: unknown): boolean {
  const cause = causeOf(err);
  return cause instanceof TimeoutFailure && cause.timeoutType === TimeoutType.SCHEDULE_TO_START;
}

/** True when a step failed because the VM's QEMU is gone or no longer there: it stopped. */
export function vmStopped(err: unknown): boolean {
  const type = nonRetryableTypeOf(err);
  return type === 'VmGone' || type === 'VmNotFound';
}

/** Why a disk failed HostUnreachable: no host agent started its steps within the pickup timeout. */
export function unreachableReason(hostId: string, seconds: number, queue: string): string {
  return `host ${hostId} did not pick up the merge within ${seconds} s: no host agent polls ${queue}`;
}

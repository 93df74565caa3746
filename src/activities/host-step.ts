import type { z } from 'zod';

import { failure } from '../domain/failures';
import { describeIssues } from '../domain/input';
import { PathOutsideRootError } from '../domain/layout';
import { DiskNotFoundError, VmGoneError, VmNotFoundError } from '../drivers/errors';
import { CorruptImageHeaderError } from '../storage/qemu-img';

/** Parses an activity input; a bad one is refused before anything is touched. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.infer<S> {
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw failure('InvalidMergeInput', `invalid input: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/**
 * Runs a host step, turning what the host reports and retrying cannot fix into named
 * non-retryable failures: the one place driver errors become Temporal failures.
 */
export async function translateHostErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof VmNotFoundError) throw failure('VmNotFound', err.message);
    if (err instanceof VmGoneError) throw failure('VmGone', err.message);
    if (err instanceof DiskNotFoundError) throw failure('DiskNotFound', err.message);
    if (err instanceof PathOutsideRootError) throw failure('PathOutsideStorageRoot', err.message);
    if (err instanceof CorruptImageHeaderError) throw failure('CorruptImageHeader', err.message);
    throw err;
  }
}

/** True for the errors that say the VM is not (or no longer) there: nothing left to do on it. */
export function isVmAbsent(err: unknown): boolean {
  return err instanceof VmGoneError || err instanceof VmNotFoundError;
}

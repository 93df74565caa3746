import type { z } from 'zod';
import { describeIssues } from '../domain/input';
import { DiskNotFoundError, refuse, VmGoneError, VmNotFoundError } from '../host/errors';
import { PathOutsideRootError } from '../domain/layout';
import { CorruptImageHeaderError } from '../host/qemu-img';

/** Parses an activity input; a bad one is refused before anything is touched. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.infer<S> {
  const parsed = schema.safeParse(input);
  if (!parsed.success) throw refuse('InvalidMergeInput', `invalid input: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/** Turns the host's "this cannot get better by retrying" errors into named non-retryable failures. */
export async function hostStep<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof VmNotFoundError) throw refuse('VmNotFound', err.message);
    if (err instanceof VmGoneError) throw refuse('VmGone', err.message);
    if (err instanceof DiskNotFoundError) throw refuse('DiskNotFound', err.message);
    if (err instanceof PathOutsideRootError) throw refuse('PathOutsideStorageRoot', err.message);
    if (err instanceof CorruptImageHeaderError) throw refuse('CorruptImageHeader', err.message);
    throw err;
  }
}

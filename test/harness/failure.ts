import { ApplicationFailure } from '@temporalio/common';

/**
 * The ApplicationFailure `p` rejects with. Any other error is rethrown; a result fails the test with
 * `otherwise`, which says what went on that should not have.
 */
export async function failureOf(
  p: Promise<unknown>,
  otherwise = 'expected an ApplicationFailure, got a result',
): Promise<ApplicationFailure> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApplicationFailure) return err;
    throw err;
  }
  throw new Error(otherwise);
}

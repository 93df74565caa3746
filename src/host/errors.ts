import { ApplicationFailure } from '@temporalio/common';
import type { NonRetryableType } from '../config/policy';

/** A failure retrying cannot fix: the step ends at once with a named type. */
export function refuse(type: NonRetryableType, message: string, details?: unknown): ApplicationFailure {
  return ApplicationFailure.create({ type, message, nonRetryable: true, details: details === undefined ? [] : [details] });
}

/** The VM has no QMP socket on this host: it does not run here. */
export class VmNotFoundError extends Error {
  override name = 'VmNotFoundError';
}
/** The VM's QMP socket exists but nobody answers: QEMU died. */
export class VmGoneError extends Error {
  override name = 'VmGoneError';
}
export class DiskNotFoundError extends Error {
  override name = 'DiskNotFoundError';
}

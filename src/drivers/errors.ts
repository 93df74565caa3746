/**
 * What a host driver reports when a VM or disk is not there. The activity layer turns them into
 * named failures (activities/host-step.ts); nothing here knows of Temporal.
 */

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
/**
 * The disk's image directory does not resolve (missing, or a symlink to nothing): no volume of it
 * can be checked, so nothing is touched. Retried: a storage mount that is back makes it resolve.
 */
export class ImageDirMissingError extends Error {
  override name = 'ImageDirMissingError';
}

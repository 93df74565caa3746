import * as path from 'node:path';

/**
 * Where things live on a host. Volumes: `<storageRoot>/images/<diskId>/<volumeId>.qcow2`.
 * A VM's run directory: `<runDir>/<vmId>/`, holding its QMP sockets.
 */

export class PathOutsideRootError extends Error {
  constructor(
    readonly candidate: string,
    readonly root: string,
  ) {
    super(`path ${candidate} lies outside the storage root ${root}`);
    this.name = 'PathOutsideRootError';
  }
}

/** Resolves `candidate` and returns it only when it lies strictly inside `root`. */
export function confineToRoot(root: string, candidate: string): string {
  const resolvedRoot = path.resolve(root);
  const resolved = path.resolve(resolvedRoot, candidate);
  if (!resolved.startsWith(resolvedRoot + path.sep)) throw new PathOutsideRootError(resolved, resolvedRoot);
  return resolved;
}

export function imageDir(storageRoot: string, diskId: string): string {
  return confineToRoot(storageRoot, path.join('images', diskId));
}

export function volumePath(storageRoot: string, diskId: string, volumeId: string): string {
  return confineToRoot(storageRoot, path.join('images', diskId, `${volumeId}.qcow2`));
}

/** The volume id of a path under the disk's image dir, or undefined for any other path. */
export function volumeIdOf(storageRoot: string, diskId: string, filePath: string): string | undefined {
  const dir = imageDir(storageRoot, diskId);
  const resolved = path.resolve(filePath);
  if (path.dirname(resolved) !== dir || !resolved.endsWith('.qcow2')) return undefined;
  return path.basename(resolved, '.qcow2');
}

export function vmRunDir(runDir: string, vmId: string): string {
  return confineToRoot(runDir, vmId);
}

/** The host agent's QMP socket. */
export function qmpSocketPath(runDir: string, vmId: string): string {
  return path.join(vmRunDir(runDir, vmId), 'qmp.sock');
}

/**
 * A second QMP monitor for people and tests (lab verify, outside cancels): a QMP socket serves
 * one client at a time, and the host agent keeps its own connection open.
 */
export function auxQmpSocketPath(runDir: string, vmId: string): string {
  return path.join(vmRunDir(runDir, vmId), 'qmp-aux.sock');
}

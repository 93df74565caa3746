import * as path from 'node:path';

import { reclaimPath } from '../storage/reclaim';

/**
 * Whether `name` is the reclaim name of a deleted volume (`.<vol>.qcow2.reclaim`, see
 * ../reclaim.ts), tied to `reclaimPath` itself so the two cannot drift apart.
 *
 * Such files do not count as users of their backing file: a delete step renames a volume to this
 * name only after detaching it from its VM and checking that nothing used it; no chain, backing
 * scan or volume lookup of the product opens it again; the host agent unlinks it a second later.
 * Counting it would refuse a merge into the base right after the top above it was deleted, for no
 * reader. A process that still held the file open would be holding this file, not the volume
 * asked about, and the /proc scan looks at the volume's own inode anyway.
 */
export function isReclaimName(name: string): boolean {
  const m = /^\.(.+\.qcow2)\.reclaim$/.exec(name);
  return m !== null && path.basename(reclaimPath(path.join('/', m[1]))) === name;
}

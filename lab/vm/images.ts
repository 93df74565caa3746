/** A lab disk's qcow2 chain on disk, and the data pattern each layer writes into it. */
import * as path from 'node:path';

import { volumePath } from '../../src/domain/layout';
import { hexPattern, type LabDisk, layerPattern } from './manifest';
import { LabCommandError, runOk } from './processes';

/**
 * Creates disk `d`'s volumes (base first, each backed by the one below under a relative name) in
 * its existing image dir and writes layer i's pattern over its own region [i·R, (i+1)·R) and over
 * the shared overwrite region [K·R, (K+1)·R), R = `layerBytes`.
 */
export async function writeDiskImages(
  storageRoot: string,
  disk: LabDisk,
  d: number,
  sizeMiB: number,
  layerBytes: number,
): Promise<void> {
  const R = layerBytes;
  const K = disk.volumeIds.length;
  let lowerName: string | undefined;
  for (const volumeId of disk.volumeIds) {
    const file = volumePath(storageRoot, disk.diskId, volumeId);
    const args = ['create', '-q', '-f', 'qcow2'];
    // Relative backing name: the chain survives moving the image dir, and it is what a merge writes back.
    if (lowerName) args.push('-b', lowerName, '-F', 'qcow2');
    args.push(file, `${sizeMiB}M`);
    await runOk('qemu-img', args);
    lowerName = path.basename(file);
  }
  for (let i = 0; i < K; i++) {
    const file = volumePath(storageRoot, disk.diskId, disk.volumeIds[i]);
    const p = hexPattern(layerPattern(d, i));
    for (const offset of [i * R, K * R]) {
      const cmd = `write -P ${p} ${offset} ${R}`;
      const r = await runOk('qemu-io', ['-f', 'qcow2', '-c', cmd, file]);
      if (!r.stdout.includes(`wrote ${R}/${R} bytes`)) {
        throw new LabCommandError(`qemu-io ${cmd} ${file} did not report the write: ${r.stdout}${r.stderr}`, r);
      }
    }
  }
}

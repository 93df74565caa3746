import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import type { z } from 'zod';

import { imageDir } from '../domain/layout';

/**
 * A small JSON record the host keeps about one volume, hidden beside the disk's images
 * (`.<volumeId>.<suffix>`): the tombstone of a deleted top, the pivot record of an active commit.
 * Each decides later what is deleted or skipped, so it is written synced and read strictly.
 */
export interface HiddenRecordKind<T> {
  /** How a message names it, e.g. `tombstone`. */
  what: string;
  /** The file name after `.<volumeId>.`, e.g. `merged.json`. */
  suffix: string;
  schema: z.ZodType<T>;
  /** The volume a record says it is of: it must be the one whose name it has. */
  volumeOf: (record: T) => string;
}

export function hiddenRecordPath<T>(
  kind: HiddenRecordKind<T>,
  storageRoot: string,
  diskId: string,
  volumeId: string,
): string {
  return path.join(imageDir(storageRoot, diskId), `.${volumeId}.${kind.suffix}`);
}

/**
 * The record of `volumeId`, or undefined when it has none. One that does not parse, or that is of
 * another volume, is thrown: it cannot say anything about this volume.
 */
export async function readHiddenRecord<T>(
  kind: HiddenRecordKind<T>,
  storageRoot: string,
  diskId: string,
  volumeId: string,
): Promise<T | undefined> {
  const file = hiddenRecordPath(kind, storageRoot, diskId, volumeId);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const record = kind.schema.parse(JSON.parse(text));
  const of = kind.volumeOf(record);
  if (of !== volumeId) throw new Error(`${kind.what} ${file} is of volume ${of}, not ${volumeId}`);
  return record;
}

/** Writes the record and syncs it and its directory: it must outlive a host that loses power. */
export async function writeHiddenRecord<T>(
  kind: HiddenRecordKind<T>,
  storageRoot: string,
  diskId: string,
  record: T,
): Promise<void> {
  const file = hiddenRecordPath(kind, storageRoot, diskId, kind.volumeOf(record));
  const tmp = `${file}.tmp`;
  const handle = await fs.open(tmp, 'w');
  try {
    await handle.writeFile(JSON.stringify(record));
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, file);
  const dir = await fs.open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export async function removeHiddenRecord<T>(
  kind: HiddenRecordKind<T>,
  storageRoot: string,
  diskId: string,
  volumeId: string,
): Promise<void> {
  await fs.rm(hiddenRecordPath(kind, storageRoot, diskId, volumeId), { force: true });
}

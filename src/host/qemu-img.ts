import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { z } from 'zod';

const run = promisify(execFile);

const imageInfoSchema = z.looseObject({
  filename: z.string(),
  format: z.string(),
  'backing-filename': z.string().optional(),
  'full-backing-filename': z.string().optional(),
});

/**
 * The backing file named in an image's header, resolved to an absolute path (or undefined).
 * `-U` because the image may be open in a running VM.
 */
export async function readBackingFile(imagePath: string): Promise<string | undefined> {
  const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', imagePath]);
  const info = imageInfoSchema.parse(JSON.parse(stdout));
  const backing = info['full-backing-filename'] ?? info['backing-filename'];
  return backing === undefined ? undefined : path.resolve(path.dirname(imagePath), backing);
}

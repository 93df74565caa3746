import * as fs from 'node:fs';
import * as path from 'node:path';

/** Writes a qcow2 magic and version 3, then a backing-file offset far past the file's end: its header cannot be read. */
export function writeUnreadableImage(file: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const header = Buffer.alloc(104);
  header.write('QFI\xfb', 0, 'latin1');
  header.writeUInt32BE(3, 4);
  header.writeBigUInt64BE(1n << 40n, 8);
  header.writeUInt32BE(100, 16);
  fs.writeFileSync(file, header);
  return file;
}

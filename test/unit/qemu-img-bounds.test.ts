/**
 * The header reader at the edges of its bounds (qemu-img.ts): the shortest qcow2 header it reads
 * on, and the longest backing name the spec allows, which QEMU reads too.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { CorruptImageHeaderError, readImageRefs } from '../../src/storage/qemu-img';

const run = promisify(execFile);
let dir: string;
const img = (name: string): string => path.join(dir, name);

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'qemu-img-bounds-'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', img('base.qcow2'), '1M']);
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', img('child.qcow2')]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('a qcow2 header of exactly 24 bytes is read on, and its missing extensions make it corrupt', async () => {
  const header = Buffer.alloc(24);
  header.writeUInt32BE(0x514649fb, 0); // QFI\xfb
  header.writeUInt32BE(2, 4); // version 2: its extensions start at byte 72
  header.writeUInt32BE(16, 20); // 64 KiB clusters
  writeFileSync(img('v2-24.qcow2'), header);
  await expect(readImageRefs(img('v2-24.qcow2'))).rejects.toThrow(
    new CorruptImageHeaderError(img('v2-24.qcow2'), 'header extension past the end of the file'),
  );
});

test('a backing name of 1023 bytes, the most the spec allows, is read as QEMU reads it', async () => {
  const bytes = readFileSync(img('child.qcow2'));
  const backingAt = Number(bytes.readBigUInt64BE(8));
  const name = `${'n'.repeat(1023 - 'base.qcow2'.length - 1)}/base.qcow2`;
  bytes.writeUInt32BE(name.length, 16);
  bytes.write(name, backingAt, 'latin1');
  writeFileSync(img('longest-name.qcow2'), bytes);
  const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', img('longest-name.qcow2')]);
  expect((JSON.parse(stdout) as { 'backing-filename'?: string })['backing-filename']).toBe(name);
  await expect(readImageRefs(img('longest-name.qcow2'))).resolves.toMatchObject({ backing: name });
});

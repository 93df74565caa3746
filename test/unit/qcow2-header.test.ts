import { execFile } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { CorruptImageHeaderError, readBackingFile } from '../../src/host/qemu-img';

const run = promisify(execFile);
let dir: string;
const img = (name: string): string => path.join(dir, name);
const create = (...args: string[]): Promise<unknown> => run('qemu-img', ['create', '-q', ...args], { cwd: dir });

/** What `qemu-img info` itself reports, the reference the header reader must agree with. */
async function qemuImgBacking(file: string): Promise<string | undefined> {
  const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', file]);
  const info = JSON.parse(stdout) as { 'full-backing-filename'?: string };
  return info['full-backing-filename'];
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'qcow2-header-'));
  await create('-f', 'qcow2', img('base.qcow2'), '16M');
  await create('-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', img('mid.qcow2'));
  await create('-f', 'qcow2', '-b', img('mid.qcow2'), '-F', 'qcow2', img('top.qcow2'));
  await create('-f', 'raw', img('raw.img'), '1M');
  await run('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', 'base.qcow2', img('top.qcow2')]);
  await create('-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', img('rebased.qcow2'));
  await run('qemu-img', ['rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', img('base.qcow2'), img('rebased.qcow2')]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test.each([
  ['no backing file', 'base.qcow2', undefined],
  ['a relative backing name', 'mid.qcow2', 'base.qcow2'],
  ['a header rewritten by rebase -u to a shorter name', 'top.qcow2', 'base.qcow2'],
  ['a header rewritten by rebase -u to an absolute name', 'rebased.qcow2', 'base.qcow2'],
  ['a raw image', 'raw.img', undefined],
])('%s: agrees with qemu-img info', async (_what, name, expected) => {
  const backing = await readBackingFile(img(name));
  expect(backing).toBe(expected === undefined ? undefined : img(expected));
  expect(backing).toBe(await qemuImgBacking(img(name)));
});

test('a header naming its backing past the end of the file is a named error, not a guess', async () => {
  const file = img('corrupt.qcow2');
  await create('-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', file);
  const fd = openSync(file, 'r+');
  const offset = Buffer.alloc(8);
  offset.writeBigUInt64BE(1n << 40n);
  writeSync(fd, offset, 0, 8, 8);
  closeSync(fd);
  await expect(readBackingFile(file)).rejects.toBeInstanceOf(CorruptImageHeaderError);
});

test('a file shorter than a header is not a qcow2 image', async () => {
  writeFileSync(img('short.qcow2'), 'QFI');
  await expect(readBackingFile(img('short.qcow2'))).resolves.toBeUndefined();
});

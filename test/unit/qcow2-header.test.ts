import { execFile } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { dirOf, readName } from '../../src/storage/image-names';
import { CorruptImageHeaderError, readImageRefs } from '../../src/storage/qemu-img';

const run = promisify(execFile);
let dir: string;
const img = (name: string): string => path.join(dir, name);
const create = (...args: string[]): Promise<unknown> => run('qemu-img', ['create', '-q', ...args], { cwd: dir });

/** What `qemu-img info` itself reports, the reference the header reader must agree with. */
async function qemuImgInfo(
  file: string,
): Promise<{ 'full-backing-filename'?: string; 'backing-filename-format'?: string }> {
  const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', file]);
  return JSON.parse(stdout) as { 'full-backing-filename'?: string; 'backing-filename-format'?: string };
}
/** The backing as QEMU opens it: the name read as QEMU reads it, against the image's directory. */
async function backingOf(file: string): Promise<string | undefined> {
  const backing = (await readImageRefs(file))?.backing;
  return backing === undefined ? undefined : readName(backing, dirOf(file)).files[0]?.path;
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
  const backing = await backingOf(img(name));
  expect(backing).toBe(expected === undefined ? undefined : img(expected));
  const info = await qemuImgInfo(img(name));
  expect(backing).toBe(info['full-backing-filename']);
  expect((await readImageRefs(img(name)))?.backingFormat).toBe(info['backing-filename-format']);
});

test('an external data file is named when the header says QEMU opens it, and only then', async () => {
  await create('-f', 'qcow2', '-o', `data_file=${img('data.raw')}`, img('with-data.qcow2'), '1M');
  expect(await readImageRefs(img('with-data.qcow2'))).toEqual({ dataFile: img('data.raw') });
  // The same header extension with the incompatible bit cleared: QEMU ignores the name.
  const file = img('with-data.qcow2');
  const bytes = readFileSync(file);
  bytes.writeBigUInt64BE(bytes.readBigUInt64BE(72) & ~(1n << 2n), 72);
  writeFileSync(img('bit-cleared.qcow2'), bytes);
  expect(await readImageRefs(img('bit-cleared.qcow2'))).toBeUndefined();
});

test('a QED image names its backing as QEMU does; a VMDK image is opaque', async () => {
  await create('-f', 'qed', '-b', 'base.qcow2', '-F', 'qcow2', img('child.qed'));
  expect(await readImageRefs(img('child.qed'))).toEqual({ backing: 'base.qcow2' });
  await create('-f', 'qed', img('alone.qed'), '1M');
  expect(await readImageRefs(img('alone.qed'))).toBeUndefined();
  await create('-f', 'vmdk', img('disk.vmdk'), '1M');
  expect((await readImageRefs(img('disk.vmdk')))?.opaque).toMatch(/VMDK/);
  await create('-f', 'vmdk', '-o', 'subformat=monolithicFlat', img('flat.vmdk'), '1M');
  expect((await readImageRefs(img('flat.vmdk')))?.opaque).toMatch(/VMDK/);
});

test('a header naming its backing past the end of the file is a named error, not a guess', async () => {
  const file = img('corrupt.qcow2');
  await create('-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', file);
  const fd = openSync(file, 'r+');
  const offset = Buffer.alloc(8);
  offset.writeBigUInt64BE(1n << 40n);
  writeSync(fd, offset, 0, 8, 8);
  closeSync(fd);
  await expect(readImageRefs(file)).rejects.toBeInstanceOf(CorruptImageHeaderError);
});

test('a file shorter than a header is not a qcow2 image', async () => {
  writeFileSync(img('short.qcow2'), 'QFI');
  await expect(readImageRefs(img('short.qcow2'))).resolves.toBeUndefined();
});

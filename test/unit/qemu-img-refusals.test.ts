/**
 * The header reader's refusals by name and words, at the bounds the spec sets, and isBackingOf on
 * backing names that open more than one file or something that is no file here.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { readName } from '../../src/storage/image-names';
import { CorruptImageHeaderError, isBackingOf, readImageRefs } from '../../src/storage/qemu-img';

const run = promisify(execFile);
let dir: string;
const img = (name: string): string => path.join(dir, name);
const create = (...args: string[]): Promise<unknown> => run('qemu-img', ['create', '-q', ...args], { cwd: dir });

const qedHeader = (backingAt: number, backingSize: number): Buffer => {
  const header = Buffer.alloc(64);
  header.writeUInt32LE(0x00444551, 0);
  header.writeBigUInt64LE(1n, 16);
  header.writeUInt32LE(backingAt, 56);
  header.writeUInt32LE(backingSize, 60);
  return header;
};

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'qemu-img-refusals-'));
  await create('-f', 'qcow2', img('base.qcow2'), '1M');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('a refusal is a CorruptImageHeaderError by name, naming the image', async () => {
  writeFileSync(img('short.qed'), qedHeader(0, 0).subarray(0, 4));
  const err = await readImageRefs(img('short.qed')).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(CorruptImageHeaderError);
  expect(err).toMatchObject({ name: 'CorruptImageHeaderError', imagePath: img('short.qed') });
  expect((err as Error).message).toBe(`${img('short.qed')}: corrupt image header: QED header shorter than 64 bytes`);
});

test('an external data file that the header flags but does not name is opaque', async () => {
  await create('-f', 'qcow2', img('flagged.qcow2'), '1M');
  const bytes = readFileSync(img('flagged.qcow2'));
  bytes.writeBigUInt64BE(bytes.readBigUInt64BE(72) | (1n << 2n), 72);
  writeFileSync(img('flagged.qcow2'), bytes);
  expect(await readImageRefs(img('flagged.qcow2'))).toEqual({
    opaque: 'an image with an external data file that its header does not name (the opener names it)',
  });
});

test('extensions that start past the end of the file are named in the error', async () => {
  await create('-f', 'qcow2', img('cut.qcow2'), '1M');
  const bytes = readFileSync(img('cut.qcow2'));
  bytes.writeUInt32BE(8192, 100);
  writeFileSync(img('cut.qcow2'), bytes.subarray(0, 8192));
  await expect(readImageRefs(img('cut.qcow2'))).rejects.toThrow(
    new CorruptImageHeaderError(img('cut.qcow2'), 'header extension past the end of the file'),
  );
});

test('a QED backing name of 1023 bytes, the most the spec allows, is read', async () => {
  const name = 'b'.repeat(1023);
  writeFileSync(img('longest.qed'), Buffer.concat([qedHeader(64, 1023), Buffer.from(name)]));
  expect(await readImageRefs(img('longest.qed'))).toEqual({ backing: name });
});

test('a QED backing name past the end of the file is named in the error', async () => {
  writeFileSync(img('past.qed'), qedHeader(64, 10));
  await expect(readImageRefs(img('past.qed'))).rejects.toThrow(
    new CorruptImageHeaderError(img('past.qed'), 'backing file name past the end of the file'),
  );
});

describe('isBackingOf, for a backing name that is more than one local file', () => {
  const withBacking = async (file: string, backing: string): Promise<string> => {
    await create('-f', 'qcow2', '-u', '-b', backing, '-F', 'qcow2', img(file), '1M');
    return img(file);
  };
  const fileNode = (filename: string) => ({ driver: 'file', filename });

  test('a json: name that opens the base and another file is not the base', async () => {
    const name = `json:${JSON.stringify({
      driver: 'qcow2',
      file: fileNode(img('base.qcow2')),
      'data-file': fileNode(img('other.raw')),
    })}`;
    expect(readName(name, dir).files).toHaveLength(2);
    expect(await isBackingOf(await withBacking('two-files.qcow2', name), img('base.qcow2'))).toBe(false);
  });

  test('a json: name that opens the base and names what the guard cannot resolve is not the base', async () => {
    const name = `json:${JSON.stringify({
      driver: 'qcow2',
      file: fileNode(img('base.qcow2')),
      backing: { driver: 'nbd', server: { type: 'inet', host: '127.0.0.1', port: '1' }, export: 'x' },
    })}`;
    const reading = readName(name, dir);
    expect(reading.files).toHaveLength(1);
    expect(reading.unresolved.length).toBeGreaterThan(0);
    expect(await isBackingOf(await withBacking('with-network.qcow2', name), img('base.qcow2'))).toBe(false);
  });

  test('the same json: name opening only the base is the base', async () => {
    const name = `json:${JSON.stringify({ driver: 'qcow2', file: fileNode(img('base.qcow2')) })}`;
    expect(await isBackingOf(await withBacking('one-file.qcow2', name), img('base.qcow2'))).toBe(true);
  });
});

/**
 * The header reader on images QEMU made and then had one field rewritten: each case is a header
 * QEMU's own reader (block/qcow2.c, block/qed.c) reads one way, and `qemu-img info -U` is asked
 * what it makes of the same bytes wherever it opens them.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { CorruptImageHeaderError, isBackingOf, readImageRefs, readQcow2Geometry } from '../../src/storage/qemu-img';

const run = promisify(execFile);
let dir: string;
const img = (name: string): string => path.join(dir, name);
const create = (...args: string[]): Promise<unknown> => run('qemu-img', ['create', '-q', ...args], { cwd: dir });

const QCOW_MAGIC = 0x514649fb;
const EXT_BACKING_FORMAT = 0xe2792aca;

interface Info {
  'backing-filename'?: string;
  'backing-filename-format'?: string;
}
async function qemuImgInfo(file: string): Promise<Info> {
  const { stdout } = await run('qemu-img', ['info', '-U', '--output=json', file]);
  return JSON.parse(stdout) as Info;
}

/** A header extension as qcow2.txt lays it out: type, length, data padded to 8 bytes. */
function extension(type: number, data: string): Buffer {
  const ext = Buffer.alloc(8 + Math.ceil(data.length / 8) * 8);
  ext.writeUInt32BE(type, 0);
  ext.writeUInt32BE(data.length, 4);
  ext.write(data, 8, 'latin1');
  return ext;
}

/**
 * A copy of a v3 child of base.qcow2 (64 KiB clusters) whose first cluster is rewritten: the
 * extensions at `extensionsAt`, then the backing name at `backingAt` (0: none).
 */
function rewriteFirstCluster(
  name: string,
  { extensionsAt, extensions, backingAt }: { extensionsAt: number; extensions: Buffer[]; backingAt: number },
): string {
  const bytes = readFileSync(img('child.qcow2'));
  bytes.fill(0, 104, 65536);
  bytes.writeUInt32BE(extensionsAt, 100);
  Buffer.concat(extensions).copy(bytes, extensionsAt);
  bytes.writeBigUInt64BE(BigInt(backingAt), 8);
  bytes.writeUInt32BE(backingAt === 0 ? 0 : 'base.qcow2'.length, 16);
  if (backingAt !== 0) bytes.write('base.qcow2', backingAt, 'latin1');
  writeFileSync(img(name), bytes);
  return img(name);
}

/** The first bytes of a qcow2 header: magic, version, backing offset and size, cluster bits. */
function shortHeader(length: number, fields: { version: number; clusterBits: number }): Buffer {
  const header = Buffer.alloc(length);
  header.writeUInt32BE(QCOW_MAGIC, 0);
  if (length >= 8) header.writeUInt32BE(fields.version, 4);
  if (length >= 24) header.writeUInt32BE(fields.clusterBits, 20);
  return header;
}

/** The descriptors this process holds open on `file`. */
function openDescriptorsOn(file: string): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(path.join('/proc/self/fd', fd)) === file;
    } catch {
      return false;
    }
  }).length;
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'qemu-img-headers-'));
  await create('-f', 'qcow2', img('base.qcow2'), '1M');
  await create('-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', img('child.qcow2'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('qcow2 header fields', () => {
  test('a version 2 image has extensions right after its 72-byte header and no feature bits', async () => {
    await create('-f', 'qcow2', '-o', 'compat=0.10', '-b', 'base.qcow2', '-F', 'qcow2', img('v2.qcow2'));
    expect(await readImageRefs(img('v2.qcow2'))).toEqual({ backing: 'base.qcow2', backingFormat: 'qcow2' });
    expect(await qemuImgInfo(img('v2.qcow2'))).toMatchObject({
      'backing-filename': 'base.qcow2',
      'backing-filename-format': 'qcow2',
    });
  });

  test('a qcow (version 1) image has no extensions: what follows its header is not read as one', async () => {
    await create('-f', 'qcow', img('v1.qcow'), '1M');
    const bytes = readFileSync(img('v1.qcow'));
    // The field qcow2 reads as cluster_bits is qcow's mtime, which QEMU ignores.
    bytes.writeUInt32BE(16, 20);
    const padded = Buffer.concat([bytes, Buffer.alloc(Math.max(0, 96 - bytes.length))]);
    extension(EXT_BACKING_FORMAT, 'raw').copy(padded, 72);
    writeFileSync(img('v1.qcow'), padded);
    expect(await readImageRefs(img('v1.qcow'))).toBeUndefined();
    expect((await qemuImgInfo(img('v1.qcow')))['backing-filename-format']).toBeUndefined();
  });

  test('both a backing format and a data file are read, the second after the first', async () => {
    await create('-f', 'qcow2', '-o', 'data_file=data.raw', '-b', 'base.qcow2', '-F', 'qcow2', img('both.qcow2'));
    expect(await readImageRefs(img('both.qcow2'))).toEqual({
      backing: 'base.qcow2',
      backingFormat: 'qcow2',
      dataFile: 'data.raw',
    });
  });

  test('a backing offset of 0 names no backing, whatever the size field holds', async () => {
    const bytes = readFileSync(img('child.qcow2'));
    bytes.writeBigUInt64BE(0n, 8);
    writeFileSync(img('offset-0.qcow2'), bytes);
    expect(await readImageRefs(img('offset-0.qcow2'))).toEqual({ backingFormat: 'qcow2' });
    expect((await qemuImgInfo(img('offset-0.qcow2')))['backing-filename']).toBeUndefined();
  });

  test('a backing name of 0 bytes names no backing', async () => {
    const bytes = readFileSync(img('child.qcow2'));
    bytes.writeUInt32BE(0, 16);
    writeFileSync(img('size-0.qcow2'), bytes);
    expect(await readImageRefs(img('size-0.qcow2'))).toEqual({ backingFormat: 'qcow2' });
    expect((await qemuImgInfo(img('size-0.qcow2')))['backing-filename']).toBeUndefined();
  });

  test('extensions past the first 4 KiB read are read from the file', async () => {
    const file = rewriteFirstCluster('far.qcow2', {
      extensionsAt: 4096,
      extensions: [extension(EXT_BACKING_FORMAT, 'qcow2'), Buffer.alloc(8)],
      backingAt: 4120,
    });
    expect(await readImageRefs(file)).toEqual({ backing: 'base.qcow2', backingFormat: 'qcow2' });
    expect(await qemuImgInfo(file)).toMatchObject({
      'backing-filename': 'base.qcow2',
      'backing-filename-format': 'qcow2',
    });
  });

  test('an extension whose header ends where the backing name starts is read', async () => {
    const file = rewriteFirstCluster('edge.qcow2', {
      extensionsAt: 112,
      extensions: [extension(EXT_BACKING_FORMAT, '')],
      backingAt: 120,
    });
    // QEMU reads a 0-byte format too, and then probes the backing's format.
    expect(await readImageRefs(file)).toEqual({ backing: 'base.qcow2', backingFormat: '' });
    expect((await qemuImgInfo(file))['backing-filename']).toBe('base.qcow2');
  });

  test('an extension that runs into the backing name is corrupt, as QEMU finds it', async () => {
    const file = rewriteFirstCluster('overlap.qcow2', {
      extensionsAt: 112,
      extensions: [extension(EXT_BACKING_FORMAT, 'qcow2-and-more')],
      backingAt: 128,
    });
    await expect(readImageRefs(file)).rejects.toThrow(
      new CorruptImageHeaderError(file, 'header extension 0xe2792aca too long'),
    );
    await expect(qemuImgInfo(file)).rejects.toThrow(/too large/);
  });

  test('an extension that runs past the first cluster of an image with no backing is corrupt', async () => {
    const file = rewriteFirstCluster('past-cluster.qcow2', {
      extensionsAt: 65536 - 8,
      extensions: [extension(EXT_BACKING_FORMAT, 'qcow2')],
      backingAt: 0,
    });
    await expect(readImageRefs(file)).rejects.toThrow(/header extension 0xe2792aca too long/);
    await expect(qemuImgInfo(file)).rejects.toThrow(/too large/);
  });

  test('names that lie past the end of the file are named in the error', async () => {
    const backing = readFileSync(img('child.qcow2'));
    backing.writeBigUInt64BE(1n << 40n, 8);
    writeFileSync(img('backing-past-end.qcow2'), backing);
    await expect(readImageRefs(img('backing-past-end.qcow2'))).rejects.toThrow(
      new CorruptImageHeaderError(img('backing-past-end.qcow2'), 'backing file name past the end of the file'),
    );
    await create('-f', 'qcow2', '-o', 'data_file=cut.raw', img('cut.qcow2'), '1M');
    const cut = readFileSync(img('cut.qcow2'));
    const nameAt = cut.indexOf('cut.raw', 0, 'latin1');
    writeFileSync(img('cut.qcow2'), cut.subarray(0, nameAt));
    await expect(readImageRefs(img('cut.qcow2'))).rejects.toThrow(
      new CorruptImageHeaderError(img('cut.qcow2'), 'data file name past the end of the file'),
    );
  });

  test('a backing name longer than the spec allows is corrupt', async () => {
    const bytes = readFileSync(img('child.qcow2'));
    bytes.writeUInt32BE(1024, 16);
    writeFileSync(img('long-name.qcow2'), bytes);
    await expect(readImageRefs(img('long-name.qcow2'))).rejects.toThrow(
      new CorruptImageHeaderError(img('long-name.qcow2'), 'backing file name of 1024 bytes'),
    );
  });

  test('a qcow2 magic in a file shorter than the backing fields names nothing', async () => {
    const header = shortHeader(20, { version: 2, clusterBits: 16 });
    header.writeBigUInt64BE(4n, 8);
    header.writeUInt32BE(4, 16);
    writeFileSync(img('tiny.qcow2'), header);
    await expect(readImageRefs(img('tiny.qcow2'))).resolves.toBeUndefined();
  });

  test('the file is closed after each read, named or refused', async () => {
    await readImageRefs(img('child.qcow2'));
    await expect(readImageRefs(img('long-name.qcow2'))).rejects.toThrow(CorruptImageHeaderError);
    await readQcow2Geometry(img('child.qcow2'));
    expect(openDescriptorsOn(img('child.qcow2'))).toBe(0);
    expect(openDescriptorsOn(img('long-name.qcow2'))).toBe(0);
  });
});

describe('QED header fields', () => {
  const qedHeader = (length: number): Buffer => {
    const header = Buffer.alloc(length);
    header.writeUInt32LE(0x00444551, 0);
    return header;
  };

  test('a QED header shorter than 64 bytes is corrupt', async () => {
    writeFileSync(img('short.qed'), qedHeader(40));
    await expect(readImageRefs(img('short.qed'))).rejects.toThrow(
      new CorruptImageHeaderError(img('short.qed'), 'QED header shorter than 64 bytes'),
    );
  });

  test('a QED header of exactly 64 bytes with no backing flag names nothing', async () => {
    writeFileSync(img('exact.qed'), qedHeader(64));
    await expect(readImageRefs(img('exact.qed'))).resolves.toBeUndefined();
  });

  test('a QED backing name longer than the spec allows is corrupt', async () => {
    const header = qedHeader(64);
    header.writeBigUInt64LE(1n, 16);
    header.writeUInt32LE(64, 56);
    header.writeUInt32LE(2000, 60);
    writeFileSync(img('long.qed'), Buffer.concat([header, Buffer.alloc(2000, 0x61)]));
    await expect(readImageRefs(img('long.qed'))).rejects.toThrow(
      new CorruptImageHeaderError(img('long.qed'), 'backing file name of 2000 bytes'),
    );
  });
});

describe('qcow2 geometry', () => {
  test('a file that is no qcow2 image, or too short to say, has none', async () => {
    writeFileSync(img('zeros.raw'), Buffer.alloc(4096));
    await expect(readQcow2Geometry(img('zeros.raw'))).resolves.toBeUndefined();
    writeFileSync(img('short-geometry.qcow2'), shortHeader(20, { version: 2, clusterBits: 16 }));
    await expect(readQcow2Geometry(img('short-geometry.qcow2'))).resolves.toBeUndefined();
  });

  test('24 bytes are enough for a version 2 geometry', async () => {
    writeFileSync(img('v2-24.qcow2'), shortHeader(24, { version: 2, clusterBits: 16 }));
    await expect(readQcow2Geometry(img('v2-24.qcow2'))).resolves.toEqual({
      clusterBytes: 65536,
      refcountBits: 16,
      l2EntryBytes: 8,
    });
  });

  test.each([
    [8, false],
    [9, true],
    [21, true],
    [22, false],
  ])('cluster_bits %d is accepted: %s', async (clusterBits, accepted) => {
    const file = img(`bits-${clusterBits}.qcow2`);
    writeFileSync(file, shortHeader(24, { version: 2, clusterBits }));
    if (accepted) await expect(readQcow2Geometry(file)).resolves.toMatchObject({ clusterBytes: 2 ** clusterBits });
    else
      await expect(readQcow2Geometry(file)).rejects.toThrow(
        new CorruptImageHeaderError(file, `cluster_bits ${clusterBits} out of range`),
      );
  });

  test('a version 3 image gives its refcount width, and a width past 64 bits is corrupt', async () => {
    await create('-f', 'qcow2', '-o', 'refcount_bits=64', img('rc64.qcow2'), '1M');
    await expect(readQcow2Geometry(img('rc64.qcow2'))).resolves.toEqual({
      clusterBytes: 65536,
      refcountBits: 64,
      l2EntryBytes: 8,
    });
    const bytes = readFileSync(img('rc64.qcow2'));
    bytes.writeUInt32BE(7, 96);
    writeFileSync(img('rc128.qcow2'), bytes);
    await expect(readQcow2Geometry(img('rc128.qcow2'))).rejects.toThrow(
      new CorruptImageHeaderError(img('rc128.qcow2'), 'refcount_order 7 out of range'),
    );
  });
});

describe('isBackingOf', () => {
  test('the backing named, through a symlink too, and nothing else', async () => {
    symlinkSync(img('base.qcow2'), img('base-link.qcow2'));
    await create('-f', 'qcow2', '-b', 'base-link.qcow2', '-F', 'qcow2', img('via-link.qcow2'));
    expect(await isBackingOf(img('child.qcow2'), img('base.qcow2'))).toBe(true);
    expect(await isBackingOf(img('via-link.qcow2'), img('base.qcow2'))).toBe(true);
    expect(await isBackingOf(img('child.qcow2'), img('via-link.qcow2'))).toBe(false);
    expect(await isBackingOf(img('base.qcow2'), img('base.qcow2'))).toBe(false);
  });

  test('a backing that is missing, or no local file, is not the file', async () => {
    const bytes = readFileSync(img('child.qcow2'));
    bytes.write('gone.qcow2', Number(bytes.readBigUInt64BE(8)), 'latin1');
    writeFileSync(img('gone-child.qcow2'), bytes);
    expect(await isBackingOf(img('gone-child.qcow2'), img('gone.qcow2'))).toBe(false);
    await create('-f', 'qcow2', '-u', '-b', 'nbd://127.0.0.1:1/base', '-F', 'raw', img('nbd-child.qcow2'), '1M');
    expect(await isBackingOf(img('nbd-child.qcow2'), img('base.qcow2'))).toBe(false);
    await create('-f', 'qcow2', '-u', '-b', 'base.qcow2', '-F', 'qcow2', img('to-gone.qcow2'), '1M');
    expect(await isBackingOf(img('to-gone.qcow2'), img('no-such.qcow2'))).toBe(false);
  });
});

import { type BigIntStats, promises as fs } from 'node:fs';

import { dirOf, readName } from './image-names';

/**
 * The names an image's header holds that make QEMU open other files: a qcow2 (or qcow, or QED)
 * backing file, and a qcow2 external data file. The headers are read directly (not by spawning
 * `qemu-img info`, 12 ms per image): the fields are written at creation and rewritten in place
 * only by a rebase or an amend, and a reader needs no lock, so it is safe while a VM runs.
 * Layouts: QEMU's docs/interop/qcow2.txt and block/qed.h.
 */

const QCOW_MAGIC = 0x514649fb; // "QFI\xfb", qcow (version 1) and qcow2 alike
const QED_MAGIC = 0x00444551; // "QED\0", little-endian
const VMDK_MAGICS = new Set([0x564d444b, 0x434f5744]); // "KDMV", "COWD", little-endian
const VMDK_DESCRIPTOR = '# Disk DescriptorFile';
/** One read covers the header, its extensions and the backing name of any image made by QEMU. */
const FIRST_READ = 4096;
/** The spec caps the backing file name at 1023 bytes. */
const MAX_BACKING_NAME = 1023;
/** Header extensions end within the first cluster; QEMU's largest cluster is 2 MiB. */
const MAX_EXTENSIONS = 2 * 1024 * 1024;
const EXT_END = 0;
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_DATA_FILE = 0x44415441;
const INCOMPAT_DATA_FILE = 1n << 2n;
const QED_F_BACKING_FILE = 1n;

/** An image whose header names something where it cannot be read. */
export class CorruptImageHeaderError extends Error {
  constructor(
    readonly imagePath: string,
    detail: string,
  ) {
    super(`${imagePath}: corrupt image header: ${detail}`);
    this.name = 'CorruptImageHeaderError';
  }
}

/** The other files an image names, as written in its header (not yet resolved: see image-names.ts). */
export interface ImageRefs {
  backing?: string;
  /** The backing's format, when the header names one (QEMU then opens the backing with that driver). */
  backingFormat?: string;
  /** The external data file, named only when the header's incompatible bit says QEMU opens it. */
  dataFile?: string;
  /** Why the names of this image cannot be read here (a VMDK descriptor's extents): a guard must refuse. */
  opaque?: string;
}

/** The names the image at `imagePath` holds; undefined for one that names no other file (raw, a base). */
export async function readImageRefs(imagePath: string): Promise<ImageRefs | undefined> {
  const handle = await fs.open(imagePath, 'r');
  try {
    const read = async (at: number, length: number, what: string): Promise<Buffer> => {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await handle.read(buf, 0, length, at);
      if (bytesRead !== length) throw new CorruptImageHeaderError(imagePath, `${what} past the end of the file`);
      return buf;
    };
    const head = Buffer.alloc(FIRST_READ);
    const { bytesRead } = await handle.read(head, 0, FIRST_READ, 0);
    const header = head.subarray(0, bytesRead);
    if (header.length < 4) return undefined;
    if (header.readUInt32BE(0) === QCOW_MAGIC) return await qcowRefs(imagePath, header, read);
    if (header.readUInt32LE(0) === QED_MAGIC) return await qedRefs(imagePath, header, read);
    if (VMDK_MAGICS.has(header.readUInt32LE(0)) || header.toString('latin1').startsWith(VMDK_DESCRIPTOR))
      return { opaque: 'a VMDK image, whose extents and parent this guard does not read' };
    return undefined;
  } finally {
    await handle.close();
  }
}

type Read = (at: number, length: number, what: string) => Promise<Buffer>;

async function qcowRefs(imagePath: string, header: Buffer, read: Read): Promise<ImageRefs | undefined> {
  if (header.length < 24) return undefined;
  const version = header.readUInt32BE(4);
  const refs: ImageRefs = {};
  const backingAt = header.readBigUInt64BE(8);
  const backingSize = header.readUInt32BE(16);
  if (backingAt !== 0n && backingSize !== 0) {
    if (backingSize > MAX_BACKING_NAME)
      throw new CorruptImageHeaderError(imagePath, `backing file name of ${backingSize} bytes`);
    refs.backing = await text(header, backingAt, backingSize, read, 'backing file name');
  }
  if (version < 2) return namesOf(refs);
  // Version 2 ends its header at 72 bytes; version 3 says where.
  const extensionsAt = version >= 3 && header.length >= 104 ? header.readUInt32BE(100) : 72;
  const incompatible = version >= 3 && header.length >= 80 ? header.readBigUInt64BE(72) : 0n;
  const clusterBytes = 2 ** header.readUInt32BE(20);
  const end = Math.min(backingAt !== 0n ? Number(backingAt) : clusterBytes, clusterBytes, MAX_EXTENSIONS);
  let at = extensionsAt;
  while (at + 8 <= end) {
    const ext = at + 8 <= header.length ? header.subarray(at, at + 8) : await read(at, 8, 'header extension');
    const type = ext.readUInt32BE(0);
    const length = ext.readUInt32BE(4);
    if (type === EXT_END) break;
    if (at + 8 + length > end)
      throw new CorruptImageHeaderError(imagePath, `header extension 0x${type.toString(16)} too long`);
    if (type === EXT_BACKING_FORMAT)
      refs.backingFormat = await text(header, BigInt(at + 8), length, read, 'backing format');
    if (type === EXT_DATA_FILE && (incompatible & INCOMPAT_DATA_FILE) !== 0n)
      refs.dataFile = await text(header, BigInt(at + 8), length, read, 'data file name');
    at += 8 + Math.ceil(length / 8) * 8;
  }
  if ((incompatible & INCOMPAT_DATA_FILE) !== 0n && refs.dataFile === undefined)
    refs.opaque = 'an image with an external data file that its header does not name (the opener names it)';
  return namesOf(refs);
}

const namesOf = (refs: ImageRefs): ImageRefs | undefined => (Object.keys(refs).length > 0 ? refs : undefined);

async function qedRefs(imagePath: string, header: Buffer, read: Read): Promise<ImageRefs | undefined> {
  if (header.length < 64) throw new CorruptImageHeaderError(imagePath, 'QED header shorter than 64 bytes');
  if ((header.readBigUInt64LE(16) & QED_F_BACKING_FILE) === 0n) return undefined;
  const size = header.readUInt32LE(60);
  if (size > MAX_BACKING_NAME) throw new CorruptImageHeaderError(imagePath, `backing file name of ${size} bytes`);
  return { backing: await text(header, BigInt(header.readUInt32LE(56)), size, read, 'backing file name') };
}

async function text(header: Buffer, at: bigint, length: number, read: Read, what: string): Promise<string> {
  const end = at + BigInt(length);
  const bytes =
    end <= BigInt(header.length) ? header.subarray(Number(at), Number(end)) : await read(Number(at), length, what);
  return bytes.toString('utf8');
}

/** What a qcow2 image's allocations are made of: its cluster size and refcount width. */
export interface Qcow2Geometry {
  clusterBytes: number;
  refcountBits: number;
  /** Bytes per L2 entry: 8, or 16 with extended L2 entries (subclusters). */
  l2EntryBytes: number;
}

const CLUSTER_BITS_AT = 20; // u32
const INCOMPATIBLE_FEATURES_AT = 72; // u64, version 3
const REFCOUNT_ORDER_AT = 96; // u32, version 3
const GEOMETRY_HEADER_BYTES = 104;
const EXTENDED_L2_BIT = 4n;

/**
 * The geometry of a qcow2 image, from its header (a read needs no lock); undefined for a file that
 * is not qcow2. Version 2 images have 16-bit refcounts and no feature fields.
 */
export async function readQcow2Geometry(imagePath: string): Promise<Qcow2Geometry | undefined> {
  const handle = await fs.open(imagePath, 'r');
  try {
    const header = Buffer.alloc(GEOMETRY_HEADER_BYTES);
    const { bytesRead } = await handle.read(header, 0, GEOMETRY_HEADER_BYTES, 0);
    if (bytesRead < 24 || header.readUInt32BE(0) !== QCOW_MAGIC) return undefined;
    const version = header.readUInt32BE(4);
    const clusterBits = header.readUInt32BE(CLUSTER_BITS_AT);
    // QEMU accepts cluster sizes of 512 bytes to 2 MiB.
    if (clusterBits < 9 || clusterBits > 21)
      throw new CorruptImageHeaderError(imagePath, `cluster_bits ${clusterBits} out of range`);
    if (version < 3 || bytesRead < GEOMETRY_HEADER_BYTES)
      return { clusterBytes: 2 ** clusterBits, refcountBits: 16, l2EntryBytes: 8 };
    const refcountOrder = header.readUInt32BE(REFCOUNT_ORDER_AT);
    if (refcountOrder > 6) throw new CorruptImageHeaderError(imagePath, `refcount_order ${refcountOrder} out of range`);
    const extendedL2 = ((header.readBigUInt64BE(INCOMPATIBLE_FEATURES_AT) >> EXTENDED_L2_BIT) & 1n) === 1n;
    return { clusterBytes: 2 ** clusterBits, refcountBits: 2 ** refcountOrder, l2EntryBytes: extendedL2 ? 16 : 8 };
  } finally {
    await handle.close();
  }
}

/**
 * Whether QEMU, opening `imagePath`, opens `file` as its backing: the header's backing name read as
 * QEMU reads it (image-names.ts) is one local file with the same inode. A name that opens no file
 * here, or several, is not that file.
 */
export async function isBackingOf(imagePath: string, file: string): Promise<boolean> {
  const backing = (await readImageRefs(imagePath))?.backing;
  if (backing === undefined) return false;
  const { files, unresolved } = readName(backing, dirOf(imagePath));
  if (files.length !== 1 || unresolved.length > 0) return false;
  const [a, b] = await Promise.all([statOrUndefined(files[0].path), statOrUndefined(file)]);
  return a !== undefined && b !== undefined && a.dev === b.dev && a.ino === b.ino;
}

async function statOrUndefined(p: string): Promise<BigIntStats | undefined> {
  try {
    return await fs.stat(p, { bigint: true });
  } catch {
    return undefined;
  }
}

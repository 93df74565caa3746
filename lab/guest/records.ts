/** The writer's records (see writer.c): what one record-sized slot of the write region holds. */
import * as zlib from 'node:zlib';

/** "LMWREC01", the first 8 bytes of every record. */
export const RECORD_MAGIC = 'LMWREC01';

export function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

export type Slot =
  | { kind: 'empty' }
  | { kind: 'record'; seq: number }
  | { kind: 'bad-checksum' | 'foreign-record' | 'garbage'; detail: string };

/** What one record-sized slot of the write region holds. */
export function classifySlot(rec: Buffer, where: { disk: number; offset: number; nonce: string }): Slot {
  if (isZero(rec)) return { kind: 'empty' };
  if (rec.toString('latin1', 0, 8) !== RECORD_MAGIC)
    return { kind: 'garbage', detail: `neither zeros nor a record (starts ${rec.toString('hex', 0, 16)})` };
  const size = rec.length;
  const crc = rec.readUInt32LE(size - 4);
  const computed = zlib.crc32(rec.subarray(0, size - 4));
  if (crc !== computed)
    return {
      kind: 'bad-checksum',
      detail: `record (seq ${rec.readBigUInt64LE(16)}) has CRC-32 ${crc.toString(16)}, its bytes give ${computed.toString(16)}`,
    };
  const disk = rec.readUInt32LE(8);
  const recSize = rec.readUInt32LE(12);
  const seq = rec.readBigUInt64LE(16);
  const offset = rec.readBigUInt64LE(24);
  const nonce = rec.readBigUInt64LE(32).toString(16).padStart(16, '0');
  const wrong: string[] = [];
  if (disk !== where.disk) wrong.push(`disk ${disk}`);
  if (recSize !== size) wrong.push(`record size ${recSize}`);
  if (offset !== BigInt(where.offset)) wrong.push(`offset ${offset}`);
  if (nonce !== where.nonce) wrong.push(`nonce ${nonce}`);
  if (seq < 1n || seq > BigInt(Number.MAX_SAFE_INTEGER)) wrong.push(`sequence ${seq}`);
  if (wrong.length > 0) return { kind: 'foreign-record', detail: `record of ${wrong.join(', ')} (seq ${seq})` };
  return { kind: 'record', seq: Number(seq) };
}

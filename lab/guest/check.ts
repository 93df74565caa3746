/**
 * The check that nothing the guest was told is written got lost: after the guest VM stopped
 * (cleanly, or its QEMU killed), each disk's final chain is read on the host and compared with the
 * writer's ACK log.
 *
 * Per disk, for every offset the log acknowledges, the record there must be the one of the highest
 * acknowledged sequence number at that offset, or a later one the guest wrote but could not report
 * (at most the one in flight: the writer reports each write before it issues the next). Every
 * record's checksum must be right, and its disk, offset and nonce this run's; the rest of the write
 * region reads zeros, every lab pattern region its layer's pattern, everything else zeros; and
 * `qemu-img check` is clean on every volume of the disk.
 *
 * The data is read once per disk: `qemu-img convert -O raw` of the active volume (through its
 * backing chain) to a sparse temp file, scanned in 4 MiB chunks (a 64 MiB region: well under a second).
 */
import { constants as fsConstants } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';

import { z } from 'zod';

import { describeIssues } from '../../src/domain/input';
import { volumeIdOf, volumePath } from '../../src/domain/layout';
import { readHeaderChain } from '../vm/chain';
import { hexPattern, type LabDisk, readLabVm } from '../vm/manifest';
import { run, runningLabVmPid, runOk } from '../vm/processes';
import { type AckLine, readAckLog } from './acks';
import { type LabGuest } from './config';

/** "LMWREC01", the first 8 bytes of every record. */
export const RECORD_MAGIC = 'LMWREC01';

export type GuestProblemKind =
  /** An acknowledged write is not on the disk: an older record, nothing, or something else is there. */
  | 'lost-write'
  /** A record (its magic is there) whose CRC-32 is wrong. */
  | 'bad-checksum'
  /** A record with a right checksum but another disk, offset, size or nonce than this place and run. */
  | 'foreign-record'
  /** A record whose sequence number the ACK stream cannot explain (beyond the one write in flight). */
  | 'unexpected-record'
  /** Bytes in the write region that are neither zeros nor a record. */
  | 'garbage'
  /** A lab pattern region that does not hold its layer's pattern. */
  | 'pattern'
  /** Bytes outside the write region and the pattern regions that are not zero. */
  | 'not-zero'
  /** The ACK log itself: a malformed line, a gap in the sequence, an offset outside the region… */
  | 'ack-log'
  /** The writer reported an error (an ERR line). */
  | 'guest-error'
  /** `qemu-img check` found errors, corruptions or leaks in a volume. */
  | 'image-check'
  /** The disk's chain could not be read. */
  | 'chain';

export interface GuestProblem {
  kind: GuestProblemKind;
  /** Unset for problems of the whole log. */
  diskId?: string;
  /** Byte offset on the disk, where it applies. */
  offset?: number;
  detail: string;
}

export interface ImageCheck {
  volumeId: string;
  path: string;
  ok: boolean;
  detail?: string;
}

export interface GuestDiskReport {
  diskId: string;
  /** The writer's disk index (0 = /dev/vda). */
  index: number;
  /** The volume the disk's device wrote to at the end (the newest volume file still there). */
  activePath: string;
  /** Volume ids, active first, base last, from the image headers. */
  chain: string[];
  /** ACK lines for the disk. */
  acknowledged: number;
  /** The highest acknowledged sequence number (ACKs run 1, 2, 3… per disk). */
  lastAckedSeq: number;
  /** Distinct offsets acknowledged. */
  offsetsAcknowledged: number;
  /** Acknowledged offsets that hold their last acknowledged record or a later one. */
  found: number;
  /** Of `found`, those holding a later record the guest wrote but had not reported. */
  foundLater: number;
  /** Acknowledged offsets whose last acknowledged record is gone. */
  lost: number;
  /** Valid records of this run found in the write region. */
  records: number;
  /** The writes the writer's DONE line reports (a clean stop only). */
  doneWrites?: number;
  imageChecks: ImageCheck[];
  problems: GuestProblem[];
  /** Problems beyond the first 50 of the disk are counted here, not listed. */
  moreProblems: number;
}

export interface GuestCheckReport {
  vmId: string;
  ok: boolean;
  nonce: string;
  ackLog: string;
  /** Every disk has its DONE line: the guest flushed and powered off by itself. */
  stoppedCleanly: boolean;
  disks: GuestDiskReport[];
  /** Every problem: the log's, then each disk's (at most 50 a disk). */
  problems: GuestProblem[];
}

export interface GuestCheckOptions {
  /** Where the raw copies of the disks go (removed afterwards); default the system's temp dir. */
  tmpDir?: string;
}

const MAX_LISTED = 50;
const CHUNK = 4 * 1024 * 1024;

const imgCheckSchema = z.looseObject({
  'check-errors': z.number().int(),
  corruptions: z.number().int().optional(),
  leaks: z.number().int().optional(),
});

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p, fsConstants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/** `qemu-img check` of one volume (no lock taken: `-U`); exit 0 and no errors, corruptions or leaks. */
export async function checkImage(file: string): Promise<{ ok: boolean; detail?: string }> {
  const r = await run('qemu-img', ['check', '-U', '--output=json', '-f', 'qcow2', file]);
  let raw: unknown;
  try {
    raw = JSON.parse(r.stdout);
  } catch {
    return { ok: false, detail: `qemu-img check exited ${r.signal ?? r.code}: ${`${r.stdout}${r.stderr}`.trim()}` };
  }
  const parsed = imgCheckSchema.safeParse(raw);
  if (!parsed.success)
    return { ok: false, detail: `unexpected qemu-img check output: ${describeIssues(parsed.error)}` };
  const { 'check-errors': errors, corruptions = 0, leaks = 0 } = parsed.data;
  if (r.code === 0 && errors === 0 && corruptions === 0 && leaks === 0) return { ok: true };
  return {
    ok: false,
    detail: `qemu-img check exit ${r.code}: ${errors} check error(s), ${corruptions} corruption(s), ${leaks} leaked cluster(s)`,
  };
}

/** Reads [offset, offset+length) of the open raw file in chunks of at most CHUNK bytes (chunk-aligned to `align`). */
async function forEachChunk(
  fh: fs.FileHandle,
  offset: number,
  length: number,
  align: number,
  fn: (buf: Buffer, at: number) => void,
): Promise<void> {
  const size = Math.max(align, Math.floor(CHUNK / align) * align);
  const buf = Buffer.alloc(Math.min(size, length));
  for (let at = offset; at < offset + length; at += size) {
    const n = Math.min(size, offset + length - at);
    const { bytesRead } = await fh.read(buf, 0, n, at);
    if (bytesRead < n) buf.fill(0, bytesRead, n); // past the raw file's end: what the disk reads is zeros
    fn(buf.subarray(0, n), at);
  }
}

function isZero(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

type Slot =
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

/** The newest volume file of the disk that still exists: the one its device wrote to last. */
async function activeVolume(storageRoot: string, disk: LabDisk): Promise<string | undefined> {
  for (let i = disk.volumeIds.length - 1; i >= 0; i--) {
    const p = volumePath(storageRoot, disk.diskId, disk.volumeIds[i]);
    if (await exists(p)) return p;
  }
  return undefined;
}

interface DiskAcks {
  /** offset → highest acknowledged seq there */
  lastAt: Map<number, number>;
  /** seq → offset */
  offsetOf: Map<number, number>;
  count: number;
  lastSeq: number;
  done?: number;
}

function collectAcks(lines: AckLine[], disks: number, g: LabGuest, logProblem: (p: GuestProblem) => void): DiskAcks[] {
  const out: DiskAcks[] = Array.from({ length: disks }, () => ({
    lastAt: new Map(),
    offsetOf: new Map(),
    count: 0,
    lastSeq: 0,
  }));
  const starts = lines.filter((l) => l.kind === 'START');
  if (starts.length > 1)
    logProblem({ kind: 'ack-log', detail: `${starts.length} START lines: the guest ran more than once` });
  for (const s of starts) {
    const want = {
      nonce: g.nonce,
      disks,
      regionOffset: g.regionOffset,
      regionLength: g.regionLength,
      recordSize: g.recordSize,
      rate: g.rate,
    };
    const diff = (Object.keys(want) as (keyof typeof want)[]).filter((k) => s[k] !== want[k]);
    if (diff.length > 0)
      logProblem({
        kind: 'ack-log',
        detail: `START line differs from the manifest in ${diff.map((k) => `${k} (${s[k]} ≠ ${want[k]})`).join(', ')}`,
      });
  }
  for (const l of lines) {
    if (l.kind === 'ERR') logProblem({ kind: 'guest-error', detail: `the writer reported: ${l.text}` });
    if (l.kind !== 'ACK' && l.kind !== 'DONE') continue;
    const d = out[l.disk];
    if (!d) {
      logProblem({ kind: 'ack-log', detail: `${l.kind} line for disk ${l.disk}, which the VM does not have` });
      continue;
    }
    if (l.kind === 'DONE') {
      d.done = l.writes;
      continue;
    }
    if (l.seq !== d.lastSeq + 1)
      logProblem({ kind: 'ack-log', detail: `disk ${l.disk}: ACK seq ${l.seq} follows seq ${d.lastSeq}` });
    const end = g.regionOffset + g.regionLength;
    if (l.offset < g.regionOffset || l.offset + g.recordSize > end || (l.offset - g.regionOffset) % g.recordSize)
      logProblem({
        kind: 'ack-log',
        offset: l.offset,
        detail: `disk ${l.disk}: ACK seq ${l.seq} at offset ${l.offset}, not a record slot of the region [${g.regionOffset}, ${end})`,
      });
    d.count++;
    d.lastSeq = Math.max(d.lastSeq, l.seq);
    d.offsetOf.set(l.seq, l.offset);
    d.lastAt.set(l.offset, Math.max(d.lastAt.get(l.offset) ?? 0, l.seq));
  }
  return out;
}

/** Intervals of [0, size) covered by none of `taken`. */
function gaps(size: number, taken: { offset: number; length: number }[]): { offset: number; length: number }[] {
  const sorted = [...taken].sort((a, b) => a.offset - b.offset);
  const out: { offset: number; length: number }[] = [];
  let at = 0;
  for (const t of sorted) {
    if (t.offset > at) out.push({ offset: at, length: t.offset - at });
    at = Math.max(at, t.offset + t.length);
  }
  if (at < size) out.push({ offset: at, length: size - at });
  return out;
}

/**
 * Checks a stopped guest VM's disks against its ACK log. Refuses a VM whose QEMU still runs (its
 * guest would be writing under the check). Never changes an image.
 */
export async function checkGuestWrites(
  runDir: string,
  vmId: string,
  options: GuestCheckOptions = {},
): Promise<GuestCheckReport> {
  const root = path.resolve(runDir);
  const vm = await readLabVm(root, vmId);
  const g = vm.guest;
  if (!g) throw new Error(`lab VM ${vmId} runs no guest: there is nothing to check`);
  const pid = await runningLabVmPid(root, vmId);
  if (pid !== undefined) throw new Error(`lab VM ${vmId} still runs (pid ${pid}): stop it before the check`);

  const logProblems: GuestProblem[] = [];
  const log = await readAckLog(g.ackLog);
  for (const b of log.bad) logProblems.push({ kind: 'ack-log', detail: `line ${b.line}: ${b.error}` });
  const acks = collectAcks(log.lines, vm.disks.length, g, (p) => logProblems.push(p));

  const tmp = await fs.mkdtemp(path.join(options.tmpDir ?? os.tmpdir(), `guest-check-${vmId}-`));
  const disks: GuestDiskReport[] = [];
  try {
    for (const [d, disk] of vm.disks.entries()) {
      disks.push(await checkDisk(vm.storageRoot, vm.sizeMiB, disk, d, g, acks[d], tmp));
    }
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
  const problems = [...logProblems, ...disks.flatMap((d) => d.problems)];
  return {
    vmId,
    ok: problems.length === 0 && disks.every((d) => d.moreProblems === 0),
    nonce: g.nonce,
    ackLog: g.ackLog,
    stoppedCleanly: acks.every((a) => a.done !== undefined),
    disks,
    problems,
  };
}

async function checkDisk(
  storageRoot: string,
  sizeMiB: number,
  disk: LabDisk,
  d: number,
  g: LabGuest,
  acks: DiskAcks,
  tmp: string,
): Promise<GuestDiskReport> {
  const report: GuestDiskReport = {
    diskId: disk.diskId,
    index: d,
    activePath: '',
    chain: [],
    acknowledged: acks.count,
    lastAckedSeq: acks.lastSeq,
    offsetsAcknowledged: acks.lastAt.size,
    found: 0,
    foundLater: 0,
    lost: 0,
    records: 0,
    ...(acks.done === undefined ? {} : { doneWrites: acks.done }),
    imageChecks: [],
    problems: [],
    moreProblems: 0,
  };
  const problem = (p: Omit<GuestProblem, 'diskId'>): void => {
    if (report.problems.length < MAX_LISTED) report.problems.push({ diskId: disk.diskId, ...p });
    else report.moreProblems++;
  };
  if (acks.done !== undefined && acks.done !== acks.lastSeq)
    problem({
      kind: 'ack-log',
      detail: `the writer's DONE line counts ${acks.done} writes, the ACKs end at seq ${acks.lastSeq}`,
    });

  const active = await activeVolume(storageRoot, disk);
  if (!active) {
    problem({ kind: 'chain', detail: `no volume file of ${disk.diskId} is left` });
    return report;
  }
  report.activePath = active;
  const toId = (p: string): string => volumeIdOf(storageRoot, disk.diskId, p) ?? p;
  let chainPaths: string[] = [active];
  try {
    chainPaths = await readHeaderChain(active);
    report.chain = chainPaths.map(toId);
  } catch (err) {
    problem({ kind: 'chain', detail: `cannot read the chain of ${active}: ${(err as Error).message}` });
  }

  // Every volume of the disk still on the host, in the chain or not.
  const volumes = new Set(chainPaths);
  for (const id of disk.volumeIds) {
    const p = volumePath(storageRoot, disk.diskId, id);
    if (await exists(p)) volumes.add(p);
  }
  for (const p of volumes) {
    const c = await checkImage(p);
    report.imageChecks.push({ volumeId: toId(p), path: p, ...c });
    if (!c.ok) problem({ kind: 'image-check', detail: `${toId(p)}: ${c.detail ?? 'not clean'}` });
  }

  const raw = path.join(tmp, `${disk.diskId}.raw`);
  await runOk('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', active, raw]);
  const fh = await fs.open(raw, 'r');
  try {
    // The lab's pattern regions: each byte its layer's pattern.
    for (const r of disk.regions) {
      let bad = 0;
      let first = -1;
      await forEachChunk(fh, r.offset, r.length, 4096, (buf, at) => {
        for (let i = 0; i < buf.length; i++)
          if (buf[i] !== r.pattern) {
            if (first < 0) first = at + i;
            bad++;
          }
      });
      if (bad > 0)
        problem({
          kind: 'pattern',
          offset: first,
          detail: `${r.kind} region [${r.offset}, ${r.offset + r.length}) of layer ${r.layer}: ${bad} byte(s) differ from ${hexPattern(r.pattern)}, the first at ${first}`,
        });
    }
    // Everything else but the write region: zeros.
    for (const gap of gaps(sizeMiB * 1024 * 1024, [
      ...disk.regions,
      { offset: g.regionOffset, length: g.regionLength },
    ])) {
      await forEachChunk(fh, gap.offset, gap.length, 4096, (buf, at) => {
        if (!isZero(buf)) {
          const i = buf.findIndex((b) => b !== 0);
          problem({ kind: 'not-zero', offset: at + i, detail: `byte ${at + i} outside every region is not zero` });
        }
      });
    }
    // The write region, record by record.
    const where = { disk: d, offset: 0, nonce: g.nonce };
    await forEachChunk(fh, g.regionOffset, g.regionLength, g.recordSize, (buf, at) => {
      for (let i = 0; i + g.recordSize <= buf.length; i += g.recordSize) {
        const offset = at + i;
        where.offset = offset;
        const slot = classifySlot(buf.subarray(i, i + g.recordSize), where);
        const acked = acks.lastAt.get(offset);
        if (slot.kind === 'record') {
          report.records++;
          const ackedAt = acks.offsetOf.get(slot.seq);
          if (ackedAt === undefined && slot.seq !== acks.lastSeq + 1)
            problem({
              kind: 'unexpected-record',
              offset,
              detail: `record seq ${slot.seq} was never acknowledged, and only seq ${acks.lastSeq + 1} can have been in flight`,
            });
          else if (ackedAt !== undefined && ackedAt !== offset)
            problem({
              kind: 'unexpected-record',
              offset,
              detail: `record seq ${slot.seq} is here, but its ACK says offset ${ackedAt}`,
            });
        } else if (slot.kind !== 'empty') {
          problem({ kind: slot.kind, offset, detail: slot.detail });
        }
        if (acked === undefined) continue;
        if (slot.kind === 'record' && slot.seq >= acked) {
          report.found++;
          if (slot.seq > acked) report.foundLater++;
        } else {
          report.lost++;
          const what =
            slot.kind === 'record'
              ? `an older record (seq ${slot.seq})`
              : slot.kind === 'empty'
                ? 'zeros'
                : slot.detail;
          problem({
            kind: 'lost-write',
            offset,
            detail: `acknowledged write seq ${acked} at offset ${offset} is lost: found ${what}`,
          });
        }
      }
    });
  } finally {
    await fh.close();
    await fs.rm(raw, { force: true });
  }
  return report;
}

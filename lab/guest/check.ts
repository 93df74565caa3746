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
 * `qemu-img check` is clean on every volume of the disk (after a kill, leaked clusters are allowed).
 *
 * The data is read once per disk: `qemu-img convert -O raw` of the active volume (through its
 * backing chain) to a sparse temp file, scanned in 4 MiB chunks (a 64 MiB region: well under a second).
 */
import { constants as fsConstants } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

import { volumeIdOf, volumePath } from '../../src/domain/layout';
import { readHeaderChain } from '../vm/chain';
import { hexPattern, type LabDisk, readLabVm } from '../vm/manifest';
import { runningLabVmPid, runOk } from '../vm/processes';
import { collectAcks, type DiskAcks } from './ack-state';
import { readAckLog } from './acks';
import { type LabGuest } from './config';
import { checkImage } from './image-check';
import { classifySlot, isZero } from './records';
import type { GuestCheckOptions, GuestCheckReport, GuestDiskReport, GuestProblem } from './report';

const MAX_LISTED = 50;
const CHUNK = 4 * 1024 * 1024;

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p, fsConstants.F_OK);
    return true;
  } catch {
    return false;
  }
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

/** The volume named (the caller knows), else the newest volume file of the disk still there: the one its device wrote to last. */
async function activeVolume(storageRoot: string, disk: LabDisk, named?: string): Promise<string | undefined> {
  if (named !== undefined) {
    const p = volumePath(storageRoot, disk.diskId, named);
    return (await exists(p)) ? p : undefined;
  }
  for (let i = disk.volumeIds.length - 1; i >= 0; i--) {
    const p = volumePath(storageRoot, disk.diskId, disk.volumeIds[i]);
    if (await exists(p)) return p;
  }
  return undefined;
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
  if (!vm.guest) throw new Error(`lab VM ${vmId} runs no guest: there is nothing to check`);
  const pid = await runningLabVmPid(root, vmId);
  if (pid !== undefined) throw new Error(`lab VM ${vmId} still runs (pid ${pid}): stop it before the check`);
  return checkGuestWritesOf({ ...vm, guest: vm.guest }, options);
}

/** What the check needs of a stopped guest VM, whoever ran it (the QMP lab or libvirt). */
export interface GuestVmLayout {
  vmId: string;
  storageRoot: string;
  sizeMiB: number;
  disks: LabDisk[];
  guest: LabGuest;
}

/** The check itself, on a VM the caller knows is stopped. Never changes an image. */
export async function checkGuestWritesOf(
  vm: GuestVmLayout,
  options: GuestCheckOptions = {},
): Promise<GuestCheckReport> {
  const { vmId, guest: g } = vm;
  const logProblems: GuestProblem[] = [];
  const log = await readAckLog(g.ackLog);
  for (const b of log.bad) logProblems.push({ kind: 'ack-log', detail: `line ${b.line}: ${b.error}` });
  const acks = collectAcks(log.lines, vm.disks.length, g, (p) => logProblems.push(p));

  const tmp = await fs.mkdtemp(path.join(options.tmpDir ?? os.tmpdir(), `guest-check-${vmId}-`));
  const disks: GuestDiskReport[] = [];
  try {
    for (const [d, disk] of vm.disks.entries()) {
      disks.push(
        await checkDisk(vm.storageRoot, vm.sizeMiB, disk, d, g, acks[d], tmp, options.activeVolumes?.[disk.diskId]),
      );
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
  activeVolumeId?: string,
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

  const active = await activeVolume(storageRoot, disk, activeVolumeId);
  if (!active) {
    problem({
      kind: 'chain',
      detail: activeVolumeId
        ? `the active volume named, ${activeVolumeId}, is gone`
        : `no volume file of ${disk.diskId} is left`,
    });
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
    // A disk without its DONE line: the guest did not stop cleanly, its QEMU was killed.
    const c = await checkImage(p, { allowLeaks: acks.done === undefined });
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

/**
 * Room for a commit: how much a block commit of a top into its base can add to the base's file,
 * and how much its file system has free. The activity layer refuses the commit when the one does
 * not fit in the other (activities/merge.ts); nothing here knows of Temporal.
 *
 * The rule. A commit (an intermediate one, and an active one up to its `ready`) copies into the
 * base exactly the ranges of the virtual disk that are allocated in the top: QEMU asks which
 * ranges are allocated above the base, and the top is the only layer there. Those ranges are read
 * from the top's own allocation map (`qemu-img map --output=json -U`, the top opened without its
 * backing file, so every range it reports as `present` is the top's own: data, and also zero
 * clusters, counted as data because a commit may write them into the base as such). The base can
 * grow by at most:
 *
 *   data      the ranges, each widened to the base's cluster boundaries (a cluster the commit
 *             touches is allocated whole), overlaps counted once;
 *   L2        one L2 table (one cluster) per L2 span the ranges touch, a span being the virtual
 *             bytes one table maps (cluster² / 8 with 8-byte entries: 512 MiB at 64 KiB clusters);
 *   refcount  the refcount blocks for all those new clusters, plus one for a block boundary.
 *
 * Clusters the base already holds are overwritten in place, so this over-estimates when the base
 * has data where the top has (never under). It counts virtual bytes, not the top's file size:
 * compressed or zero clusters in the top, and a base with larger clusters, all grow the base by
 * more than the top's file takes. The margin (COMMIT_SPACE_MARGIN) covers what the bound leaves
 * out: a refcount table QEMU moves to a larger place as the file grows, the file system's own
 * metadata for a larger file (extent blocks), and other writers on the same file system while the
 * job runs (logs, tombstones, other VMs; these can exceed any margin, and then the job fails with
 * QEMU's "No space left on device", the top kept).
 *
 * Cost: one `qemu-img map` (it reads the top's L1 and L2 tables, not its data: about 10 ms for a
 * lab image) and one statfs. The top's node is flushed first (see QmpDriver.measureCommitSpace),
 * so that clusters QEMU allocated in the active layer but still holds only in its metadata cache
 * are in the map. What a guest writes into an active top after this is not bounded here.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { z } from 'zod';

import type { CommitSpace } from '../domain/commit';
import { readQcow2Geometry } from './qemu-img';

const execFileAsync = promisify(execFile);

const MiB = 1024 * 1024;

/** The margin added to the bound: 64 MiB, plus 1 % of the bound for file system metadata. */
export const COMMIT_SPACE_MARGIN = { fixedBytes: 64 * MiB, fractionOfGrowth: 0.01 } as const;

/** What a base that is not qcow2 (raw, sparse) is rounded to: a large file system block. */
const RAW_ROUNDING_BYTES = 64 * 1024;

/** One entry of `qemu-img map --output=json` (QEMU 7.2: start, length, depth, present, zero, data, offset). */
const mapEntrySchema = z.looseObject({
  start: z.number().int().min(0),
  length: z.number().int().min(0),
  depth: z.number().int().min(0),
  present: z.boolean().optional(),
  zero: z.boolean(),
  data: z.boolean(),
});
const mapSchema = z.array(mapEntrySchema);

export interface Range {
  start: number;
  length: number;
}

/** Output of `qemu-img map` is about 120 bytes per range: this is half a million ranges. */
const MAP_MAX_BUFFER = 64 * MiB;
const MAP_TIMEOUT_MS = 120_000;

/**
 * The ranges of the virtual disk allocated in the image itself (not in its backing files), read
 * with `qemu-img map -U` (no lock: the running VM holds it) on the image opened without backing.
 */
export async function allocatedRanges(imagePath: string): Promise<Range[]> {
  const spec = `json:${JSON.stringify({
    driver: 'qcow2',
    file: { driver: 'file', filename: imagePath },
    backing: null,
  })}`;
  const args = ['map', '--output=json', '-U', spec];
  let stdout: string;
  try {
    ({ stdout } = await execFileAsync('qemu-img', args, {
      maxBuffer: MAP_MAX_BUFFER,
      timeout: MAP_TIMEOUT_MS,
      encoding: 'utf8',
    }));
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`qemu-img map of ${imagePath} failed: ${(e.stderr ?? e.message).trim()}`, { cause: err });
  }
  return parseAllocatedRanges(stdout, imagePath);
}

/** The ranges of `qemu-img map --output=json` of an image opened without backing (see allocatedRanges). */
export function parseAllocatedRanges(stdout: string, imagePath: string): Range[] {
  let raw: unknown;
  try {
    raw = JSON.parse(stdout);
  } catch (err) {
    throw new Error(`qemu-img map of ${imagePath} printed no JSON: ${stdout.slice(0, 200)}`, { cause: err });
  }
  const parsed = mapSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`unexpected qemu-img map output for ${imagePath}: ${parsed.error.message}`);
  // Opened without backing, every range is at depth 0; `present` says whether the image has it.
  return parsed.data
    .filter((e) => e.depth === 0 && (e.present ?? (e.data || e.zero)) && e.length > 0)
    .map((e) => ({ start: e.start, length: e.length }));
}

/** The ranges widened to multiples of `unit` and merged where they then overlap or touch, in order. */
export function alignRanges(ranges: readonly Range[], unit: number): Range[] {
  const sorted = ranges
    .map((r) => ({ start: Math.floor(r.start / unit) * unit, end: Math.ceil((r.start + r.length) / unit) * unit }))
    .sort((a, b) => a.start - b.start);
  const out: Array<{ start: number; end: number }> = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out.map((r) => ({ start: r.start, length: r.end - r.start }));
}

/**
 * The most a commit of `ranges` (allocated in the top) can add to a qcow2 base of this geometry
 * (see the rule at the top of this file); a base that is not qcow2 grows by its data alone.
 */
export function commitGrowthBound(
  ranges: readonly Range[],
  base: { clusterBytes: number; refcountBits: number; l2EntryBytes: number } | undefined,
): number {
  if (!base) return alignRanges(ranges, RAW_ROUNDING_BYTES).reduce((sum, r) => sum + r.length, 0);
  const cluster = base.clusterBytes;
  const aligned = alignRanges(ranges, cluster);
  const dataBytes = aligned.reduce((sum, r) => sum + r.length, 0);
  const l2Span = cluster * (cluster / base.l2EntryBytes);
  const l2Tables = new Set<number>();
  for (const r of aligned) {
    const last = Math.floor((r.start + r.length - 1) / l2Span);
    for (let t = Math.floor(r.start / l2Span); t <= last; t++) l2Tables.add(t);
  }
  const newClusters = dataBytes / cluster + l2Tables.size;
  const clustersPerRefcountBlock = (cluster * 8) / base.refcountBits;
  const refcountBlocks = Math.ceil(newClusters / clustersPerRefcountBlock) + 1;
  return dataBytes + (l2Tables.size + refcountBlocks) * cluster;
}

export function commitSpaceMargin(growthBytes: number): number {
  return COMMIT_SPACE_MARGIN.fixedBytes + Math.ceil(growthBytes * COMMIT_SPACE_MARGIN.fractionOfGrowth);
}

/** Free bytes of the file system holding `dir`, as an unprivileged writer may use them. */
export async function freeBytes(dir: string): Promise<number> {
  const s = await fs.statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * Measures a commit of `topPath` into `basePath` from the files: the top's allocation map, the
 * base's geometry and its file system's free space. Read-only; the caller flushes a live top first.
 */
export async function measureCommitSpace(topPath: string, basePath: string): Promise<CommitSpace> {
  const baseDir = path.dirname(basePath);
  const [ranges, geometry, free] = await Promise.all([
    allocatedRanges(topPath),
    readQcow2Geometry(basePath),
    freeBytes(baseDir),
  ]);
  const topAllocatedBytes = ranges.reduce((sum, r) => sum + r.length, 0);
  const growthBytes = commitGrowthBound(ranges, geometry);
  const marginBytes = commitSpaceMargin(growthBytes);
  return {
    topAllocatedBytes,
    growthBytes,
    marginBytes,
    neededBytes: growthBytes + marginBytes,
    freeBytes: free,
    baseDir,
  };
}

/**
 * A lab VM's names (disks, volumes, QEMU nodes), the data pattern of each layer, its manifest
 * (`<runDir>/<vmId>/lab.json`: schema, read, write) and the errors about a lab VM's state.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { z } from 'zod';

import { describeIssues, idSchema } from '../../src/domain/input';
import { vmRunDir } from '../../src/domain/layout';
import { labGuestOptionsSchema, labGuestSchema } from '../guest/config';

export const MANIFEST_FILE = 'lab.json';
export const PID_FILE = 'qemu.pid';
export const LOG_FILE = 'qemu.log';
/** QEMU node names: at most 31 characters, starting with a letter. */
const MAX_NODE_NAME = 31;

export const MAX_DISKS = 8;
export const MAX_VOLUMES = 16;

/** `prefix` keeps the disks of VMs that share a storage root apart (`c3-disk0`, `c3-d0v1`). */
export function labDiskId(d: number, prefix = ''): string {
  return `${prefix}disk${d}`;
}

export function labVolumeId(d: number, i: number, prefix = ''): string {
  return `${prefix}d${d}v${i}`;
}

/** The QEMU node of a volume's file (protocol layer). */
export function fileNodeName(volumeId: string): string {
  return checkNodeName(`f-${volumeId}`);
}

/** The QEMU node of a volume's qcow2 format layer: the node block jobs and devices name. */
export function formatNodeName(volumeId: string): string {
  return checkNodeName(`q-${volumeId}`);
}

/** The QEMU node of a volume's blkdebug filter, between its format and file nodes (see labBlkdebugSchema). */
export function blkdebugNodeName(volumeId: string): string {
  return checkNodeName(`b-${volumeId}`);
}

export function checkNodeName(name: string): string {
  if (name.length > MAX_NODE_NAME || !/^[A-Za-z][A-Za-z0-9_.-]*$/.test(name)) {
    throw new Error(
      `QEMU node name ${JSON.stringify(name)} is invalid (at most ${MAX_NODE_NAME} characters, starting with a letter)`,
    );
  }
  return name;
}

/**
 * The byte pattern layer i of disk d writes: 0x10 + 0x20·d + i. With d < 8 and i < 16 every
 * (disk, layer) gets its own value in 0x10..0xff, never 0 (what an unallocated cluster reads).
 */
export function layerPattern(d: number, i: number): number {
  if (!Number.isInteger(d) || d < 0 || d >= MAX_DISKS)
    throw new RangeError(`disk index ${d} is outside 0..${MAX_DISKS - 1}`);
  if (!Number.isInteger(i) || i < 0 || i >= MAX_VOLUMES)
    throw new RangeError(`layer index ${i} is outside 0..${MAX_VOLUMES - 1}`);
  return 0x10 + 0x20 * d + i;
}

export function hexPattern(p: number): string {
  return `0x${p.toString(16).padStart(2, '0')}`;
}

const byteSchema = z.number().int().min(0).max(255);

export const labRegionSchema = z
  .object({
    /** `layer`: the region only layer `layer` wrote; `overwrite`: every layer wrote it, the top one shows. */
    kind: z.enum(['layer', 'overwrite']),
    /** The layer (index into volumeIds) whose data is visible here. */
    layer: z.number().int().min(0),
    offset: z.number().int().min(0),
    length: z.number().int().min(1),
    /** The byte the guest must read everywhere in the region. */
    pattern: byteSchema,
  })
  .strict();
export type LabRegion = z.infer<typeof labRegionSchema>;

/**
 * How QEMU opens the image files. `none` bypasses the host page cache (O_DIRECT), as libvirt's
 * cache='none' does and as platforms run VMs on shared storage (it is what live migration needs):
 * a block commit then moves data at the storage's speed, not at memory speed.
 */
export const labCacheSchema = z.enum(['writeback', 'none']);
export type LabCache = z.infer<typeof labCacheSchema>;

/**
 * Opens one volume's file through QEMU's `blkdebug` driver (between its qcow2 node and its file
 * node) to inject a real I/O error: once the qcow2 layer has written data to the file
 * `afterWrites` times (blkdebug's `write_aio` event, counted by `set-state` rules 1 → 2 → …), every
 * further write to the file fails with `errno` (5, EIO, by default). Nothing else in QEMU writes a
 * backing volume of a lab VM (its CPU is paused), so on a base the writes counted are a commit's:
 * the job starts, copies `afterWrites` chunks, then fails in the middle. Off unless given.
 */
export const labBlkdebugSchema = z
  .object({
    volumeId: idSchema,
    afterWrites: z.number().int().min(0).max(64),
    errno: z.number().int().min(1).max(133).default(5),
  })
  .strict();
export type LabBlkdebug = z.infer<typeof labBlkdebugSchema>;

export const labDiskSchema = z
  .object({
    diskId: idSchema,
    /** The virtio-blk device id; equals diskId. */
    deviceId: idSchema,
    /** Base first, active layer last, as created (a merge shortens the chain; this list stays). */
    volumeIds: z.array(idSchema).min(1),
    regions: z.array(labRegionSchema).min(1),
  })
  .strict();
export type LabDisk = z.infer<typeof labDiskSchema>;

export const labManifestSchema = z
  .object({
    version: z.literal(1),
    vmId: idSchema,
    /** Absolute. */
    storageRoot: z.string().min(1),
    /** Absolute. */
    runDir: z.string().min(1),
    pid: z.number().int().min(1),
    createdAt: z.string(),
    sizeMiB: z.number().int().min(1),
    layerDataMiB: z.number().int().min(1),
    /** Backing layers opened read-only, as libvirt does (the default); false opens them read-write. */
    backingReadOnly: z.boolean().default(true),
    /** Host page cache use of the image files: `writeback` (QEMU's default) or `none` (O_DIRECT, libvirt's cache='none'). */
    cache: labCacheSchema.default('writeback'),
    /** A volume opened through blkdebug, failing its writes after a count (see labBlkdebugSchema). */
    blkdebug: labBlkdebugSchema.optional(),
    qmpSocket: z.string().min(1),
    auxQmpSocket: z.string().min(1),
    disks: z.array(labDiskSchema).min(1),
    /** Set when the VM boots the lab guest (its writer writes to every disk) instead of sitting paused. */
    guest: labGuestSchema.optional(),
  })
  .strict();
export type LabManifest = z.infer<typeof labManifestSchema>;
/** A lab VM as recorded in its manifest. */
export type LabVm = LabManifest;

export const createLabVmOptionsSchema = z
  .object({
    storageRoot: z.string().min(1),
    runDir: z.string().min(1),
    vmId: idSchema,
    disks: z.number().int().min(1).max(MAX_DISKS),
    volumes: z.number().int().min(1).max(MAX_VOLUMES),
    sizeMiB: z
      .number()
      .int()
      .min(1)
      .max(1024 * 1024)
      .default(64),
    layerDataMiB: z.number().int().min(1).max(1024).default(1),
    backingReadOnly: z.boolean().default(true),
    cache: labCacheSchema.default('writeback'),
    /** Off by default: one volume's writes fail with an I/O error after a count (see labBlkdebugSchema). */
    blkdebug: labBlkdebugSchema.optional(),
    /** Prefix of disk and volume ids, for VMs sharing a storage root. */
    idPrefix: z
      .string()
      .regex(/^[a-z0-9-]{0,8}$/, 'must be up to 8 lowercase letters, digits or "-"')
      .default(''),
    /**
     * The lab guest (Debian's cloud kernel, an initramfs whose writer writes records to every disk
     * and reports each acknowledged one) boots by default (`{}`: its default options). `false`: a
     * paused VM (`-S`) with no guest OS, for tests and benchmarks that need no writes.
     */
    guest: z.union([z.literal(false), labGuestOptionsSchema]).prefault({}),
  })
  .strict()
  .refine((o) => (o.volumes + 1) * o.layerDataMiB <= o.sizeMiB, {
    message: 'the disk is too small: (volumes + 1) × layerDataMiB must not exceed sizeMiB',
    path: ['sizeMiB'],
  });
export type CreateLabVmOptions = z.input<typeof createLabVmOptionsSchema>;

export class LabVmAlreadyRunningError extends Error {
  constructor(
    readonly vmId: string,
    readonly pid: number | undefined,
    readonly runDir: string,
  ) {
    super(
      `lab VM ${vmId} is already running${pid === undefined ? '' : ` (pid ${pid})`} in ${runDir}; ` +
        'stop or destroy it first',
    );
    this.name = 'LabVmAlreadyRunningError';
  }
}

export class LabVmNotRunningError extends Error {
  constructor(
    readonly vmId: string,
    readonly runDir: string,
  ) {
    super(`lab VM ${vmId} is not running (no live QEMU for it in ${runDir})`);
    this.name = 'LabVmNotRunningError';
  }
}

export class LabVmNotFoundError extends Error {
  constructor(
    readonly vmId: string,
    readonly manifestPath: string,
  ) {
    super(`no lab VM ${vmId}: ${manifestPath} does not exist`);
    this.name = 'LabVmNotFoundError';
  }
}

function manifestPath(runDir: string, vmId: string): string {
  return path.join(vmRunDir(runDir, vmId), MANIFEST_FILE);
}

export async function readLabVm(runDir: string, vmId: string): Promise<LabVm> {
  const file = manifestPath(path.resolve(runDir), vmId);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new LabVmNotFoundError(vmId, file);
    throw err;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  const parsed = labManifestSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`${file} is not a lab manifest: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/** The manifest, or undefined when the VM has none. */
export async function readManifestIfAny(runDir: string, vmId: string): Promise<LabManifest | undefined> {
  try {
    return await readLabVm(runDir, vmId);
  } catch (err) {
    if (err instanceof LabVmNotFoundError) return undefined;
    throw err;
  }
}

/** Writes the manifest atomically (a temporary file renamed over it). */
export async function writeManifest(manifest: LabManifest): Promise<void> {
  const target = manifestPath(manifest.runDir, manifest.vmId);
  await fs.writeFile(`${target}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
  await fs.rename(`${target}.tmp`, target);
}

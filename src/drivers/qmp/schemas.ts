// Stryker disable all: mutation testing covers only the code between the restore and disable markers below, the code that decides what is written or deleted
/**
 * zod schemas for the QMP wire messages and for the replies of the commands the host driver uses.
 *
 * Shapes were checked against real output of Debian's QEMU 7.2 (`qemu-system-x86_64`). Objects are
 * loose: unknown extra fields are kept and allowed (QEMU adds fields between versions), but every
 * field we read is required (or explicitly optional) and typed.
 */
import { z } from 'zod';

import { JOB_STATUSES } from '../driver';

// ---------------------------------------------------------------------------------------------
// Wire messages
// ---------------------------------------------------------------------------------------------

export const qemuVersionSchema = z.looseObject({
  qemu: z.looseObject({ major: z.number().int(), minor: z.number().int(), micro: z.number().int() }),
  /** e.g. "Debian 1:7.2+dfsg-7+deb12u18+b3" */
  package: z.string(),
});
export type QemuVersion = z.infer<typeof qemuVersionSchema>;

/** `{"QMP": {"version": {...}, "capabilities": ["oob"]}}`, sent by QEMU on connect. */
export const greetingSchema = z.looseObject({
  QMP: z.looseObject({
    version: qemuVersionSchema,
    capabilities: z.array(z.string()),
  }),
});
export type QmpGreeting = z.infer<typeof greetingSchema>;

/** QEMU echoes back whatever JSON value we sent as `id`; this client always sends strings. */
export const qmpIdSchema = z.union([z.string(), z.number()]);

/** `{"return": <any>, "id"?: ...}` */
export const successReplySchema = z.looseObject({
  return: z.unknown(),
  id: qmpIdSchema.optional(),
});
export type QmpSuccessReply = z.infer<typeof successReplySchema>;

/** `{"error": {"class": "GenericError", "desc": "..."}, "id"?: ...}` */
export const errorReplySchema = z.looseObject({
  error: z.looseObject({ class: z.string(), desc: z.string() }),
  id: qmpIdSchema.optional(),
});
export type QmpErrorReply = z.infer<typeof errorReplySchema>;

/** `{"event": "JOB_STATUS_CHANGE", "data"?: {...}, "timestamp": {"seconds", "microseconds"}}` */
export const eventSchema = z.looseObject({
  event: z.string(),
  data: z.record(z.string(), z.unknown()).optional(),
  timestamp: z.looseObject({ seconds: z.number().int(), microseconds: z.number().int() }),
});
export type QmpEvent = z.infer<typeof eventSchema>;

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

/** QAPI JobStatus, as the driver interface names its states. */
export const jobStatusSchema = z.enum(JOB_STATUSES);

/** One entry of `query-jobs`. `error` is set on a failed/cancelled job ("Operation canceled"). */
export const jobInfoSchema = z.looseObject({
  id: z.string(),
  /** JobType, e.g. "commit", "mirror", "stream". */
  type: z.string(),
  status: jobStatusSchema,
  'current-progress': z.number(),
  'total-progress': z.number(),
  error: z.string().optional(),
});
export type JobInfo = z.infer<typeof jobInfoSchema>;
export const queryJobsSchema = z.array(jobInfoSchema);

/** One entry of `query-block-jobs`. `device` is the job id when the job was started with job-id. */
export const blockJobInfoSchema = z.looseObject({
  device: z.string(),
  type: z.string(),
  len: z.number(),
  offset: z.number(),
  busy: z.boolean(),
  paused: z.boolean(),
  speed: z.number(),
  ready: z.boolean(),
  status: jobStatusSchema,
  'io-status': z.enum(['ok', 'failed', 'nospace']).optional(),
  'auto-finalize': z.boolean().optional(),
  'auto-dismiss': z.boolean().optional(),
  error: z.string().optional(),
});
export type BlockJobInfo = z.infer<typeof blockJobInfoSchema>;
export const queryBlockJobsSchema = z.array(blockJobInfoSchema);

/** `data` of JOB_STATUS_CHANGE. */
export const jobStatusChangeDataSchema = z.looseObject({ id: z.string(), status: jobStatusSchema });
export type JobStatusChangeData = z.infer<typeof jobStatusChangeDataSchema>;

/** `data` of BLOCK_JOB_READY / BLOCK_JOB_COMPLETED / BLOCK_JOB_CANCELLED (`device` = job id). */
export const blockJobEventDataSchema = z.looseObject({
  device: z.string(),
  type: z.string(),
  len: z.number(),
  offset: z.number(),
  speed: z.number(),
  error: z.string().optional(),
});
export type BlockJobEventData = z.infer<typeof blockJobEventDataSchema>;

// ---------------------------------------------------------------------------------------------
// Block devices and nodes
// ---------------------------------------------------------------------------------------------

/** QAPI ImageInfo, recursive through `backing-image`. */
export interface ImageInfo {
  /**
   * Image filename. CAUTION: when a node's backing was given explicitly (`-blockdev ...,backing=`)
   * and does not match the backing path stored in the image header (e.g. the header holds a
   * relative path), QEMU reports a `json:{...}` pseudo-filename here; see resolveImageFilename.
   */
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'dirty-flag'?: boolean;
  /** Backing path as stored in the image header (may be relative). */
  'backing-filename'?: string;
  /** Backing path resolved to absolute. */
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  'backing-image'?: ImageInfo;
  [key: string]: unknown;
}

export const imageInfoSchema: z.ZodType<ImageInfo> = z.lazy(() =>
  z.looseObject({
    filename: z.string(),
    format: z.string(),
    'virtual-size': z.number(),
    'actual-size': z.number().optional(),
    'dirty-flag': z.boolean().optional(),
    'backing-filename': z.string().optional(),
    'full-backing-filename': z.string().optional(),
    'backing-filename-format': z.string().optional(),
    'backing-image': imageInfoSchema.optional(),
  }),
);

/**
 * QAPI BlockDeviceInfo: `inserted` of query-block and each entry of query-named-block-nodes.
 * `file` may be a `json:{...}` pseudo-filename (see ImageInfo.filename); `backing_file` is the
 * absolute path of the backing file.
 */
export const blockDeviceInfoSchema = z.looseObject({
  'node-name': z.string(),
  /** Format driver of this node: "qcow2", "raw", "file", ... */
  drv: z.string(),
  file: z.string(),
  backing_file: z.string().optional(),
  backing_file_depth: z.number().int(),
  ro: z.boolean(),
  image: imageInfoSchema,
});
export type BlockDeviceInfo = z.infer<typeof blockDeviceInfoSchema>;

/**
 * One entry of `query-block`. With `-blockdev` + `-device ...,id=disk0`, `device` is the empty
 * string and `qdev` is the QOM path, e.g. "/machine/peripheral/disk0/virtio-backend".
 */
export const blockInfoSchema = z.looseObject({
  device: z.string(),
  qdev: z.string().optional(),
  type: z.string().optional(),
  removable: z.boolean().optional(),
  locked: z.boolean().optional(),
  'io-status': z.enum(['ok', 'failed', 'nospace']).optional(),
  inserted: blockDeviceInfoSchema.optional(),
});
export type BlockInfo = z.infer<typeof blockInfoSchema>;
export const queryBlockSchema = z.array(blockInfoSchema);

/** `query-named-block-nodes` (accepts `{flat: true}` in 7.2 to omit the nested backing-image). */
export const queryNamedBlockNodesSchema = z.array(blockDeviceInfoSchema);

/** `query-blockstats`: each device's I/O counters since the VM started (QAPI BlockStats). */
export const blockStatsSchema = z.looseObject({
  device: z.string().optional(),
  qdev: z.string().optional(),
  stats: z.looseObject({
    rd_operations: z.number(),
    wr_operations: z.number(),
    flush_operations: z.number(),
    rd_total_time_ns: z.number(),
    wr_total_time_ns: z.number(),
    flush_total_time_ns: z.number(),
  }),
});
export type BlockStats = z.infer<typeof blockStatsSchema>;
export const queryBlockstatsSchema = z.array(blockStatsSchema);

// ---------------------------------------------------------------------------------------------
// Helpers
// Stryker restore all
// ---------------------------------------------------------------------------------------------

/** The device id of `-device ...,id=<diskId>`, from its QOM path `/machine/peripheral/<id>/...`. */
export function deviceIdOf(block: { device?: string; qdev?: string }): string | undefined {
  if (block.device) return block.device;
  const match = /^\/machine\/peripheral\/([^/]+)/.exec(block.qdev ?? '');
  return match?.[1];
}

/**
 * Each node's `file` (its filename as query-named-block-nodes reports it), by node name: what a
 * `json:{...}` pseudo-filename whose `file` is a node-name reference resolves through.
 */
export type NodeFiles = ReadonlyMap<string, string>;

export function nodeFilesOf(nodes: readonly BlockDeviceInfo[]): Map<string, string> {
  return new Map(nodes.map((n) => [n['node-name'], n.file]));
}

/**
 * Turn a QEMU `json:{...}` pseudo-filename into the path of the file it is stored in, by following
 * `file` down to the protocol layer's `filename`. A `file` that is a node-name reference (`"file":
 * "f-top"`) is followed through `nodeFiles` when given. Plain filenames, and pseudo-filenames that
 * cannot be decoded, are returned unchanged.
 *
 * Example (QEMU 7.2, overlay whose header has a relative backing path, opened with explicit
 * `backing=`): `json:{"backing": {...}, "driver": "qcow2", "file": {"driver": "file",
 * "filename": "/dir/top.qcow2"}}` → `/dir/top.qcow2`. A filter node between the format and the
 * file (QEMU's `blkdebug`, whose child is `image`) is followed the same way.
 */
export function resolveImageFilename(filename: string, nodeFiles?: NodeFiles): string {
  return decodeFilename(filename, 0, nodeFiles) ?? filename;
}

/** Maximum nesting followed (pseudo-filenames inside pseudo-filenames, node references): ends cycles. */
const MAX_FILENAME_DEPTH = 16;

function decodeFilename(filename: string, depth: number, nodeFiles: NodeFiles | undefined): string | undefined {
  if (!filename.startsWith('json:')) return filename;
  let options: unknown;
  try {
    options = JSON.parse(filename.slice('json:'.length));
  } catch {
    return undefined;
  }
  return protocolFilename(options, depth + 1, nodeFiles);
}

function protocolFilename(options: unknown, depth: number, nodeFiles: NodeFiles | undefined): string | undefined {
  if (depth > MAX_FILENAME_DEPTH || typeof options !== 'object' || options === null) return undefined;
  const record = options as Record<string, unknown>;
  if (typeof record.filename === 'string') return decodeFilename(record.filename, depth, nodeFiles);
  // Some drivers take the protocol node's options flattened ("file.filename": "...").
  if (typeof record['file.filename'] === 'string') return decodeFilename(record['file.filename'], depth, nodeFiles);
  // A filter between format and protocol (blkdebug) names its child `image`, the others `file`.
  const child = record.file ?? record.image;
  if (typeof child === 'string') {
    // A reference to another node by name: that node's own filename.
    const nodeFile = nodeFiles?.get(child);
    return nodeFile === undefined ? undefined : decodeFilename(nodeFile, depth, nodeFiles);
  }
  return protocolFilename(child, depth + 1, nodeFiles);
}

/**
 * Filenames of an image chain from the top (active) image to the base, following `backing-image`.
 * `json:` pseudo-filenames are resolved with resolveImageFilename (through `nodeFiles` when given).
 */
export function flattenImageChain(image: ImageInfo, nodeFiles?: NodeFiles): string[] {
  const out: string[] = [];
  let current: ImageInfo | undefined = image;
  while (current !== undefined) {
    out.push(resolveImageFilename(current.filename, nodeFiles));
    current = current['backing-image'];
  }
  return out;
}

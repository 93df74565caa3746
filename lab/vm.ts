/**
 * The lab: real QEMU VMs (no guest OS, CPU paused) whose disks are qcow2 chains with a known data
 * pattern in every layer, for demos and integration tests of live merges.
 *
 * A lab VM's disk `disk<d>` is a chain of K volumes `d<d>v0` (base) … `d<d>v<K-1>` (active), each
 * in `<storageRoot>/images/disk<d>/<volumeId>.qcow2` with a relative backing name. Layer i wrote
 * the byte pattern P(d,i) = 0x10 + 0x20·d + i over its own region [i·R, (i+1)·R) and over the shared
 * "overwrite" region [K·R, (K+1)·R), R = layerDataMiB MiB. Through the chain every layer region shows
 * its own layer's pattern and the overwrite region shows the top layer's pattern; a correct merge
 * never changes what the guest sees, so `verifyLabVm` passes before and after a merge.
 *
 * The manifest is `<runDir>/<vmId>/lab.json`; QEMU's pid file is `qemu.pid` and its log
 * `qemu.log` beside it, with the two QMP sockets of `layout.ts`.
 */
import { spawn } from 'node:child_process';
import { constants as fsConstants, openSync, closeSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { z } from 'zod';
import { idSchema, describeIssues } from '../src/domain/input';
import { auxQmpSocketPath, imageDir, qmpSocketPath, volumeIdOf, volumePath, vmRunDir } from '../src/domain/layout';
import { QmpClient } from '../src/qmp/client';

// ---------------------------------------------------------------------------------------------
// Names, patterns, schemas

export const MANIFEST_FILE = 'lab.json';
export const PID_FILE = 'qemu.pid';
export const LOG_FILE = 'qemu.log';
const MiB = 1024 * 1024;
/** sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL. */
const MAX_UNIX_SOCKET_PATH = 107;
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

function checkNodeName(name: string): string {
  if (name.length > MAX_NODE_NAME || !/^[A-Za-z][A-Za-z0-9_.-]*$/.test(name)) {
    throw new Error(`QEMU node name ${JSON.stringify(name)} is invalid (at most ${MAX_NODE_NAME} characters, starting with a letter)`);
  }
  return name;
}

/**
 * The byte pattern layer i of disk d writes: 0x10 + 0x20·d + i. With d < 8 and i < 16 every
 * (disk, layer) gets its own value in 0x10..0xff, never 0 (what an unallocated cluster reads).
 */
export function layerPattern(d: number, i: number): number {
  if (!Number.isInteger(d) || d < 0 || d >= MAX_DISKS) throw new RangeError(`disk index ${d} is outside 0..${MAX_DISKS - 1}`);
  if (!Number.isInteger(i) || i < 0 || i >= MAX_VOLUMES) throw new RangeError(`layer index ${i} is outside 0..${MAX_VOLUMES - 1}`);
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
    qmpSocket: z.string().min(1),
    auxQmpSocket: z.string().min(1),
    disks: z.array(labDiskSchema).min(1),
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
    sizeMiB: z.number().int().min(1).max(1024 * 1024).default(64),
    layerDataMiB: z.number().int().min(1).max(1024).default(1),
    backingReadOnly: z.boolean().default(true),
    cache: labCacheSchema.default('writeback'),
    /** Prefix of disk and volume ids, for VMs sharing a storage root. */
    idPrefix: z.string().regex(/^[a-z0-9-]{0,8}$/, 'must be up to 8 lowercase letters, digits or "-"').default(''),
  })
  .strict()
  .refine((o) => (o.volumes + 1) * o.layerDataMiB <= o.sizeMiB, {
    message: 'the disk is too small: (volumes + 1) × layerDataMiB must not exceed sizeMiB',
    path: ['sizeMiB'],
  });
export type CreateLabVmOptions = z.input<typeof createLabVmOptionsSchema>;

export class LabVmAlreadyRunningError extends Error {
  constructor(readonly vmId: string, readonly pid: number | undefined, readonly runDir: string) {
    super(
      `lab VM ${vmId} is already running${pid === undefined ? '' : ` (pid ${pid})`} in ${runDir}; ` +
        'stop or destroy it first',
    );
    this.name = 'LabVmAlreadyRunningError';
  }
}

export class LabVmNotRunningError extends Error {
  constructor(readonly vmId: string, readonly runDir: string) {
    super(`lab VM ${vmId} is not running (no live QEMU for it in ${runDir})`);
    this.name = 'LabVmNotRunningError';
  }
}

export class LabVmNotFoundError extends Error {
  constructor(readonly vmId: string, readonly manifestPath: string) {
    super(`no lab VM ${vmId}: ${manifestPath} does not exist`);
    this.name = 'LabVmNotFoundError';
  }
}

export class LabCommandError extends Error {
  constructor(message: string, readonly result?: RunResult) {
    super(message);
    this.name = 'LabCommandError';
  }
}

// ---------------------------------------------------------------------------------------------
// Running programs (argument arrays only)

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a program to its end; resolves with its exit status and output (a non-zero exit is not an error). */
function run(program: string, args: readonly string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new LabCommandError(`cannot run ${program}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function describeRun(program: string, args: readonly string[], r: RunResult): string {
  const status = r.signal ? `signal ${r.signal}` : `exit ${r.code}`;
  const out = `${r.stdout}${r.stderr}`.trim();
  return `${program} ${args.join(' ')} failed (${status})${out ? `: ${out}` : ''}`;
}

async function runOk(program: string, args: readonly string[]): Promise<RunResult> {
  const r = await run(program, args);
  if (r.code !== 0) throw new LabCommandError(describeRun(program, args, r), r);
  return r;
}

// ---------------------------------------------------------------------------------------------
// One QMP command at a time, on the product's QMP client.

/**
 * Runs one QMP command on a socket and returns its `return` value. A QMP socket serves one client
 * at a time: while another client is connected the connection is accepted but no greeting comes,
 * which ends here as a QmpTimeoutError.
 */
export async function qmpCommand(
  socketPath: string,
  command: string,
  args?: Record<string, unknown>,
  timeoutMs = 10_000,
): Promise<unknown> {
  const qmp = await QmpClient.connect(socketPath, { timeoutMs });
  try {
    return await qmp.execute(command, args, { timeoutMs });
  } finally {
    await qmp.close();
  }
}

/** One QMP command on a lab VM's aux socket (the host agent keeps the main one). */
export function auxQmpCommand(runDir: string, vmId: string, command: string, args?: Record<string, unknown>): Promise<unknown> {
  return qmpCommand(auxQmpSocketPath(path.resolve(runDir), vmId), command, args);
}

function canConnect(socketPath: string, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.createConnection(socketPath);
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    sock.on('connect', () => done(true));
    sock.on('error', () => done(false));
  });
}

// ---------------------------------------------------------------------------------------------
// Processes

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function pidFilePath(runDir: string, vmId: string): string {
  return path.join(vmRunDir(runDir, vmId), PID_FILE);
}

function manifestPath(runDir: string, vmId: string): string {
  return path.join(vmRunDir(runDir, vmId), MANIFEST_FILE);
}

/**
 * Whether `pid` is a live QEMU started with this pid file: its command line names the file. A
 * zombie has an empty command line, so it counts as gone; so does a reused pid.
 */
async function isOurQemu(pid: number, pidFile: string): Promise<boolean> {
  try {
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.split('\0').includes(pidFile);
  } catch {
    return false;
  }
}

async function readPidFile(pidFile: string): Promise<number | undefined> {
  try {
    const text = (await fs.readFile(pidFile, 'utf8')).trim();
    const pid = Number(text);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The pid of the lab VM's live QEMU, or undefined when none runs. */
export async function runningLabVmPid(runDir: string, vmId: string): Promise<number | undefined> {
  const root = path.resolve(runDir);
  const pidFile = pidFilePath(root, vmId);
  const candidates: number[] = [];
  const fromFile = await readPidFile(pidFile);
  if (fromFile !== undefined) candidates.push(fromFile);
  const manifest = await readManifestIfAny(root, vmId);
  if (manifest && manifest.pid !== fromFile) candidates.push(manifest.pid);
  for (const pid of candidates) if (await isOurQemu(pid, pidFile)) return pid;
  return undefined;
}

async function waitForExit(pid: number, pidFile: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!(await isOurQemu(pid, pidFile))) return true;
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

async function killQemu(pid: number, pidFile: string): Promise<void> {
  signal(pid, 'SIGTERM');
  if (await waitForExit(pid, pidFile, 3_000)) return;
  signal(pid, 'SIGKILL');
  if (!(await waitForExit(pid, pidFile, 10_000))) throw new Error(`QEMU pid ${pid} did not exit after SIGKILL`);
}

// ---------------------------------------------------------------------------------------------
// Create

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p, fsConstants.F_OK);
    return true;
  } catch {
    return false;
  }
}

async function readManifestIfAny(runDir: string, vmId: string): Promise<LabManifest | undefined> {
  try {
    return await readLabVm(runDir, vmId);
  } catch (err) {
    if (err instanceof LabVmNotFoundError) return undefined;
    throw err;
  }
}

/** Other lab VMs in `runDir` that are running on disks of `storageRoot`. */
/** Running lab VMs other than `exceptVmId` with one of `diskIds` on `storageRoot`. */
async function runningVmsOnStorage(runDir: string, storageRoot: string, exceptVmId: string, diskIds: string[]): Promise<string[]> {
  let entries: string[];
  try {
    entries = await fs.readdir(runDir);
  } catch {
    return [];
  }
  const users: string[] = [];
  for (const name of entries) {
    if (name === exceptVmId || !idSchema.safeParse(name).success) continue;
    let m: LabManifest | undefined;
    try {
      m = await readManifestIfAny(runDir, name);
    } catch {
      continue;
    }
    const shares = m?.disks.some((d) => diskIds.includes(d.diskId));
    if (m && m.storageRoot === storageRoot && shares && (await runningLabVmPid(runDir, name)) !== undefined) users.push(name);
  }
  return users;
}

function assertPlainPath(label: string, p: string): void {
  // QEMU's key=value option syntax reads ',' as a separator.
  if (p.includes(',')) throw new Error(`${label} ${p} contains a comma, which QEMU's option syntax cannot take`);
}

function buildQemuArgs(m: LabManifest, pidFile: string): string[] {
  const args = ['-S', '-nodefaults', '-display', 'none', '-machine', 'q35,accel=tcg', '-name', m.vmId];
  for (const disk of m.disks) {
    let lower: string | undefined;
    disk.volumeIds.forEach((volumeId, i) => {
      const file = volumePath(m.storageRoot, disk.diskId, volumeId);
      const fileNode = fileNodeName(volumeId);
      const fmtNode = formatNodeName(volumeId);
      // As libvirt opens a chain: backing layers read-only, file nodes auto-read-only. A block
      // commit then reopens its base read-write and, when done, read-only again, and that reopen
      // flushes the base's qcow2 metadata to the file (a base opened read-write is never reopened,
      // and QEMU 7.2 leaves the committed clusters unmapped on disk until some later flush).
      const readOnly = m.backingReadOnly && i < disk.volumeIds.length - 1 ? ',read-only=on' : '';
      const direct = m.cache === 'none' ? ',cache.direct=on,aio=threads' : '';
      args.push('-blockdev', `driver=file,filename=${file},node-name=${fileNode},auto-read-only=on${direct}`);
      // The base gets no `backing` option: it has no backing file, so QEMU opens none.
      args.push('-blockdev', `driver=qcow2,file=${fileNode},node-name=${fmtNode}${readOnly}${lower ? `,backing=${lower}` : ''}`);
      lower = fmtNode;
    });
    args.push('-device', `virtio-blk-pci,drive=${lower},id=${disk.deviceId}`);
  }
  args.push('-qmp', `unix:${m.qmpSocket},server=on,wait=off`);
  args.push('-qmp', `unix:${m.auxQmpSocket},server=on,wait=off`);
  args.push('-pidfile', pidFile);
  return args;
}

async function tail(file: string, max = 2_000): Promise<string> {
  try {
    const text = await fs.readFile(file, 'utf8');
    return text.length > max ? `…${text.slice(-max)}` : text;
  } catch {
    return '';
  }
}

/**
 * Creates the disks of a lab VM (qcow2 chains with known data) and starts it, paused, detached
 * from this process. Resolves when both QMP sockets accept connections.
 */
export async function createLabVm(options: CreateLabVmOptions): Promise<LabVm> {
  const parsed = createLabVmOptionsSchema.safeParse(options);
  if (!parsed.success) throw new Error(`invalid lab VM options: ${describeIssues(parsed.error)}`);
  const opts = parsed.data;
  const storageRoot = path.resolve(opts.storageRoot);
  const runDir = path.resolve(opts.runDir);
  const vmId = opts.vmId;
  assertPlainPath('storage root', storageRoot);
  assertPlainPath('run dir', runDir);
  const dir = vmRunDir(runDir, vmId);
  const qmpSocket = qmpSocketPath(runDir, vmId);
  const auxQmpSocket = auxQmpSocketPath(runDir, vmId);
  for (const s of [qmpSocket, auxQmpSocket]) {
    if (Buffer.byteLength(s) > MAX_UNIX_SOCKET_PATH) {
      throw new Error(`socket path ${s} is longer than ${MAX_UNIX_SOCKET_PATH} bytes; choose a shorter run dir`);
    }
  }
  const pidFile = pidFilePath(runDir, vmId);

  // A live VM of this id: refuse. Also when something still answers on its sockets.
  const livePid = await runningLabVmPid(runDir, vmId);
  if (livePid !== undefined) throw new LabVmAlreadyRunningError(vmId, livePid, runDir);
  for (const s of [qmpSocket, auxQmpSocket]) {
    if (await canConnect(s)) throw new LabVmAlreadyRunningError(vmId, undefined, runDir);
  }

  // The image dirs must be free, or leftovers of this very VM (stopped).
  const stale = await readManifestIfAny(runDir, vmId);
  const prefix = opts.idPrefix;
  const others = await runningVmsOnStorage(runDir, storageRoot, vmId, Array.from({ length: opts.disks }, (_, d) => labDiskId(d, prefix)));
  if (others.length > 0) {
    throw new Error(`storage root ${storageRoot} is in use by running lab VM(s) ${others.join(', ')}; use another storage root`);
  }
  const R = opts.layerDataMiB * MiB;
  const K = opts.volumes;
  const disks: LabDisk[] = [];
  for (let d = 0; d < opts.disks; d++) {
    const diskId = labDiskId(d, prefix);
    const idir = imageDir(storageRoot, diskId);
    const leftovers = (await exists(idir)) ? await fs.readdir(idir) : [];
    if (leftovers.length > 0) {
      const ours = stale !== undefined && stale.storageRoot === storageRoot && stale.disks.some((x) => x.diskId === diskId);
      if (!ours) {
        throw new Error(
          `${idir} already holds ${leftovers.length} file(s) not made by lab VM ${vmId}; ` +
            'destroy the lab VM that owns them or choose another storage root',
        );
      }
    }
    const volumeIds = Array.from({ length: K }, (_, i) => labVolumeId(d, i, prefix));
    const regions: LabRegion[] = volumeIds.map((_, i) => ({ kind: 'layer', layer: i, offset: i * R, length: R, pattern: layerPattern(d, i) }));
    regions.push({ kind: 'overwrite', layer: K - 1, offset: K * R, length: R, pattern: layerPattern(d, K - 1) });
    disks.push({ diskId, deviceId: diskId, volumeIds, regions });
  }

  const manifest: LabManifest = {
    version: 1,
    vmId,
    storageRoot,
    runDir,
    pid: 1, // replaced once QEMU runs
    createdAt: new Date().toISOString(),
    sizeMiB: opts.sizeMiB,
    layerDataMiB: opts.layerDataMiB,
    backingReadOnly: opts.backingReadOnly,
    cache: opts.cache,
    qmpSocket,
    auxQmpSocket,
    disks,
  };

  // Leftovers of this VM's earlier life on this storage root (it may have had more disks) go.
  if (stale !== undefined && stale.storageRoot === storageRoot) {
    for (const d of stale.disks) await fs.rm(imageDir(storageRoot, d.diskId), { recursive: true, force: true });
  }
  await fs.mkdir(dir, { recursive: true });
  for (const f of [MANIFEST_FILE, PID_FILE, LOG_FILE]) await fs.rm(path.join(dir, f), { force: true });
  for (const s of [qmpSocket, auxQmpSocket]) await fs.rm(s, { force: true });

  const createdDirs: string[] = [];
  let pid: number | undefined;
  try {
    for (const disk of disks) {
      const idir = imageDir(storageRoot, disk.diskId);
      await fs.rm(idir, { recursive: true, force: true });
      await fs.mkdir(idir, { recursive: true });
      createdDirs.push(idir);
      let lowerName: string | undefined;
      for (const volumeId of disk.volumeIds) {
        const file = volumePath(storageRoot, disk.diskId, volumeId);
        const args = ['create', '-q', '-f', 'qcow2'];
        // Relative backing name: the chain survives moving the image dir, and it is what a merge writes back.
        if (lowerName) args.push('-b', lowerName, '-F', 'qcow2');
        args.push(file, `${opts.sizeMiB}M`);
        await runOk('qemu-img', args);
        lowerName = path.basename(file);
      }
      const d = disks.indexOf(disk); // disk d is labDiskId(d)
      for (let i = 0; i < K; i++) {
        const file = volumePath(storageRoot, disk.diskId, disk.volumeIds[i]);
        const p = hexPattern(layerPattern(d, i));
        for (const offset of [i * R, K * R]) {
          const cmd = `write -P ${p} ${offset} ${R}`;
          const r = await runOk('qemu-io', ['-f', 'qcow2', '-c', cmd, file]);
          if (!r.stdout.includes(`wrote ${R}/${R} bytes`)) {
            throw new LabCommandError(`qemu-io ${cmd} ${file} did not report the write: ${r.stdout}${r.stderr}`, r);
          }
        }
      }
    }

    const logPath = path.join(dir, LOG_FILE);
    const logFd = openSync(logPath, 'a');
    let exited: string | undefined;
    try {
      const child = spawn('qemu-system-x86_64', buildQemuArgs(manifest, pidFile), {
        detached: true,
        stdio: ['ignore', logFd, logFd],
      });
      child.on('error', (err) => (exited = `cannot start qemu-system-x86_64: ${err.message}`));
      child.on('exit', (code, sig) => (exited = `QEMU exited during start-up (${sig ? `signal ${sig}` : `exit ${code}`})`));
      child.unref();
      pid = child.pid;
    } finally {
      closeSync(logFd);
    }
    const deadline = Date.now() + 30_000;
    for (;;) {
      await sleep(50);
      if (exited !== undefined) throw new Error(`${exited}; ${logPath}: ${await tail(logPath)}`);
      if (pid !== undefined && (await canConnect(qmpSocket)) && (await canConnect(auxQmpSocket))) break;
      if (Date.now() >= deadline) throw new Error(`QEMU did not open its QMP sockets within 30 s; ${logPath}: ${await tail(logPath)}`);
    }
    const fromFile = await readPidFile(pidFile);
    if (fromFile !== pid) throw new Error(`QEMU's pid file ${pidFile} names ${fromFile}, expected ${pid}`);
    manifest.pid = pid;
    const target = manifestPath(runDir, vmId);
    await fs.writeFile(`${target}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
    await fs.rename(`${target}.tmp`, target);
    return manifest;
  } catch (err) {
    if (pid !== undefined && (await isOurQemu(pid, pidFile))) await killQemu(pid, pidFile).catch(() => undefined);
    for (const d of createdDirs) await fs.rm(d, { recursive: true, force: true });
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Read, stop, destroy

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
    throw new Error(`${file} is not JSON: ${(err as Error).message}`);
  }
  const parsed = labManifestSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`${file} is not a lab manifest: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

/** Stops the VM's QEMU (SIGTERM, SIGKILL after 3 s) and waits for its end. Idempotent. */
export async function stopLabVm(runDir: string, vmId: string): Promise<void> {
  const root = path.resolve(runDir);
  const pidFile = pidFilePath(root, vmId);
  const pid = await runningLabVmPid(root, vmId);
  if (pid !== undefined) await killQemu(pid, pidFile);
  // After a SIGKILL QEMU leaves its pid file and sockets behind.
  await fs.rm(pidFile, { force: true });
  await fs.rm(qmpSocketPath(root, vmId), { force: true });
  await fs.rm(auxQmpSocketPath(root, vmId), { force: true });
}

/** Stops the VM and removes its disks' image dirs and its run dir. Idempotent. */
export async function destroyLabVm(runDir: string, vmId: string): Promise<void> {
  const root = path.resolve(runDir);
  await stopLabVm(root, vmId);
  const manifest = await readManifestIfAny(root, vmId);
  if (manifest) {
    for (const disk of manifest.disks) await fs.rm(imageDir(manifest.storageRoot, disk.diskId), { recursive: true, force: true });
  }
  await fs.rm(vmRunDir(root, vmId), { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------
// Chains: as QEMU sees them, and as the image headers say

const imageInfoLevelSchema = z.looseObject({ filename: z.string(), 'backing-image': z.unknown().optional() });
const queryBlockSchema = z.array(
  z.looseObject({
    device: z.string(),
    qdev: z.string().optional(),
    inserted: z.looseObject({ 'node-name': z.string().optional(), image: imageInfoLevelSchema }).optional(),
  }),
);
const namedNodesSchema = z.array(z.looseObject({ 'node-name': z.string(), file: z.string() }));
const jsonFilenameSchema = z.looseObject({ file: z.union([z.string(), z.looseObject({ filename: z.string() })]) });

/**
 * The file behind an image's `filename` in QEMU's block info. A qcow2 node opened with an explicit
 * `backing` option reports a `json:{…}` pseudo-filename naming its whole subtree; its own file is
 * `file.filename` there (or, when `file` is a node-name reference, that node's filename).
 */
async function fileOfImageFilename(filename: string, lookupNode: (nodeName: string) => Promise<string>): Promise<string> {
  if (!filename.startsWith('json:')) return path.resolve(filename);
  let raw: unknown;
  try {
    raw = JSON.parse(filename.slice('json:'.length));
  } catch {
    throw new Error(`unparsable QEMU pseudo-filename ${filename}`);
  }
  const parsed = jsonFilenameSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`QEMU pseudo-filename without a file: ${filename}`);
  const file = parsed.data.file;
  if (typeof file === 'string') return fileOfImageFilename(await lookupNode(file), lookupNode);
  return fileOfImageFilename(file.filename, lookupNode);
}

export interface LiveDevice {
  deviceId: string;
  /** The file the device writes to. */
  activePath: string;
  /** The chain as QEMU's block graph has it: absolute file paths, top → base. */
  qemuChain: string[];
}

/** Every virtio-blk device of the running VM with QEMU's view of its chain (one aux QMP call or two). */
export async function queryLabVmDevices(runDir: string, vmId: string): Promise<LiveDevice[]> {
  const root = path.resolve(runDir);
  if ((await runningLabVmPid(root, vmId)) === undefined) throw new LabVmNotRunningError(vmId, root);
  const parsed = queryBlockSchema.safeParse(await auxQmpCommand(root, vmId, 'query-block'));
  if (!parsed.success) throw new Error(`unexpected query-block answer: ${describeIssues(parsed.error)}`);
  let nodes: Map<string, string> | undefined;
  const lookupNode = async (nodeName: string): Promise<string> => {
    if (!nodes) {
      const n = namedNodesSchema.safeParse(await auxQmpCommand(root, vmId, 'query-named-block-nodes', { flat: true }));
      if (!n.success) throw new Error(`unexpected query-named-block-nodes answer: ${describeIssues(n.error)}`);
      nodes = new Map(n.data.map((x) => [x['node-name'], x.file]));
    }
    const f = nodes.get(nodeName);
    if (f === undefined) throw new Error(`QEMU has no block node ${nodeName}`);
    return f;
  };
  const devices: LiveDevice[] = [];
  for (const entry of parsed.data) {
    if (!entry.inserted || !entry.qdev) continue;
    const m = /^\/machine\/peripheral\/([^/]+)/.exec(entry.qdev);
    const deviceId = m ? m[1] : entry.qdev;
    const qemuChain: string[] = [];
    let level: unknown = entry.inserted.image;
    while (level !== undefined) {
      const l = imageInfoLevelSchema.safeParse(level);
      if (!l.success) throw new Error(`unexpected image info in query-block for ${deviceId}`);
      qemuChain.push(await fileOfImageFilename(l.data.filename, lookupNode));
      level = l.data['backing-image'];
    }
    devices.push({ deviceId, activePath: qemuChain[0], qemuChain });
  }
  return devices;
}

/** The file the VM's device `diskId` currently writes to, read from the running QEMU. */
export async function activeVolumePath(runDir: string, vmId: string, diskId: string): Promise<string> {
  const devices = await queryLabVmDevices(runDir, vmId);
  const dev = devices.find((d) => d.deviceId === diskId);
  if (!dev) throw new Error(`lab VM ${vmId} has no block device ${diskId} (devices: ${devices.map((d) => d.deviceId).join(', ') || 'none'})`);
  return dev.activePath;
}

const imgInfoChainSchema = z
  .array(z.looseObject({ filename: z.string(), 'backing-filename': z.string().optional() }))
  .min(1);

/**
 * The chain the image headers describe, from `activePath` down: absolute paths, top → base.
 * Uses `-U` (no lock): the running VM holds the write lock on its images.
 */
export async function readChain(activePath: string): Promise<string[]> {
  const top = path.resolve(activePath);
  const args = ['info', '-U', '--backing-chain', '--output=json', top];
  const r = await runOk('qemu-img', args);
  let raw: unknown;
  try {
    raw = JSON.parse(r.stdout);
  } catch {
    throw new LabCommandError(`qemu-img ${args.join(' ')} printed no JSON: ${r.stdout.slice(0, 200)}`, r);
  }
  const parsed = imgInfoChainSchema.safeParse(raw);
  if (!parsed.success) throw new LabCommandError(`unexpected qemu-img info output: ${describeIssues(parsed.error)}`, r);
  const chain = [top];
  for (let k = 1; k < parsed.data.length; k++) {
    const prev = parsed.data[k - 1];
    // A relative backing name is relative to the overlay's directory.
    const name = prev['backing-filename'] ?? parsed.data[k].filename;
    chain.push(path.resolve(path.dirname(chain[k - 1]), name));
  }
  return chain;
}

// ---------------------------------------------------------------------------------------------
// Verify

export interface RegionReport {
  kind: LabRegion['kind'];
  layer: number;
  offset: number;
  length: number;
  pattern: number;
  ok: boolean;
  detail?: string;
  /**
   * Set when the region failed on disk but reads correctly once QEMU has flushed: the data is in
   * QEMU's caches, not yet in the image files (so a QEMU crash now would lose it).
   */
  staleOnDisk?: boolean;
}

export interface DiskReport {
  diskId: string;
  ok: boolean;
  /** The file the device writes to (absolute). */
  activePath?: string;
  /** Volume ids top → base from the image headers (a file outside the disk's image dir: its path). */
  chain: string[];
  /** The same from QEMU's block graph; must equal `chain`. */
  qemuChain: string[];
  chainOk: boolean;
  chainDetail?: string;
  regions: RegionReport[];
}

export interface VerifyReport {
  vmId: string;
  ok: boolean;
  disks: DiskReport[];
}

/**
 * Reads a region through the chain under `imagePath` and checks every byte is `pattern`, with
 * `qemu-io -U -r` (read-only, no lock, so it works while the VM runs). A mismatch makes qemu-io
 * print "Pattern verification failed" (on stdout) and exit 1; both are checked.
 */
export async function checkRegion(
  imagePath: string,
  region: { offset: number; length: number; pattern: number },
): Promise<{ ok: boolean; detail?: string }> {
  const cmd = `read -P ${hexPattern(region.pattern)} ${region.offset} ${region.length}`;
  const r = await run('qemu-io', ['-U', '-r', '-f', 'qcow2', '-c', cmd, imagePath]);
  const out = `${r.stdout}${r.stderr}`.trim();
  if (/pattern verification failed/i.test(out)) {
    const line = out.split('\n').find((l) => /pattern verification failed/i.test(l)) ?? out;
    return { ok: false, detail: `${line.trim()} (expected ${hexPattern(region.pattern)})` };
  }
  if (r.code !== 0) return { ok: false, detail: `qemu-io ${cmd} exited ${r.signal ?? r.code}: ${out}` };
  if (!r.stdout.includes(`read ${region.length}/${region.length} bytes`)) return { ok: false, detail: `qemu-io ${cmd} did not report the read: ${out}` };
  return { ok: true };
}

function checkChain(disk: LabDisk, chain: string[], qemuChain: string[]): string | undefined {
  if (chain.join('\n') !== qemuChain.join('\n')) {
    return `image headers say ${chain.join(' → ')} but QEMU's graph says ${qemuChain.join(' → ')}`;
  }
  const base = disk.volumeIds[0];
  if (chain[chain.length - 1] !== base) return `the chain ends in ${chain[chain.length - 1]}, not in the base ${base}`;
  let prev = Infinity;
  for (const id of chain) {
    const idx = disk.volumeIds.indexOf(id);
    if (idx < 0) return `${id} is not a volume of ${disk.diskId}`;
    if (idx >= prev) return `${id} is out of order in ${chain.join(' → ')}`;
    prev = idx;
  }
  return undefined;
}

const namedNodeDrvSchema = z.array(z.looseObject({ 'node-name': z.string(), drv: z.string() }));

/**
 * Makes QEMU write every qcow2 node's cached metadata to its image file (HMP `qemu-io <node>
 * "flush"` per node: no change of run state, unlike `stop`). Returns the flushed node names.
 */
export async function flushLabVm(runDir: string, vmId: string): Promise<string[]> {
  const root = path.resolve(runDir);
  const parsed = namedNodeDrvSchema.safeParse(await auxQmpCommand(root, vmId, 'query-named-block-nodes', { flat: true }));
  if (!parsed.success) throw new Error(`unexpected query-named-block-nodes answer: ${describeIssues(parsed.error)}`);
  const nodes = [...new Set(parsed.data.filter((n) => n.drv === 'qcow2').map((n) => n['node-name']))];
  for (const node of nodes) {
    checkNodeName(node);
    const out = await auxQmpCommand(root, vmId, 'human-monitor-command', { 'command-line': `qemu-io ${node} "flush"` });
    // Success prints nothing on the monitor (qemu-io's own output goes to QEMU's stdout, the log).
    if (typeof out === 'string' && out.trim() !== '') throw new Error(`flushing ${node} failed: ${out.trim()}`);
  }
  return nodes;
}

export interface VerifyOptions {
  /**
   * Flush QEMU's caches to the image files before reading (default false). Without it verify
   * reads what is on disk, and a region found stale there is re-read after a flush to tell stale
   * metadata (`staleOnDisk`) from lost data; it fails either way.
   */
  flush?: boolean;
}

/**
 * Checks every disk's chain (image headers and QEMU's graph must agree, base last, volumes in
 * order) and every region's data, read from the image files with `qemu-io -U -r`.
 */
export async function verifyLabVm(runDir: string, vmId: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  const root = path.resolve(runDir);
  const vm = await readLabVm(root, vmId);
  const devices = await queryLabVmDevices(root, vmId);
  if (options.flush) await flushLabVm(root, vmId);
  const toId = (diskId: string, p: string): string => volumeIdOf(vm.storageRoot, diskId, p) ?? p;
  const disks: DiskReport[] = [];
  for (const disk of vm.disks) {
    const dev = devices.find((d) => d.deviceId === disk.deviceId);
    if (!dev) {
      disks.push({ diskId: disk.diskId, ok: false, chain: [], qemuChain: [], chainOk: false, chainDetail: `QEMU has no device ${disk.deviceId}`, regions: [] });
      continue;
    }
    let chain: string[] = [];
    let chainDetail: string | undefined;
    try {
      chain = (await readChain(dev.activePath)).map((p) => toId(disk.diskId, p));
    } catch (err) {
      chainDetail = `cannot read the chain: ${(err as Error).message}`;
    }
    const qemuChain = dev.qemuChain.map((p) => toId(disk.diskId, p));
    chainDetail ??= checkChain(disk, chain, qemuChain);
    const regions: RegionReport[] = [];
    for (const region of disk.regions) regions.push({ ...region, ...(await checkRegion(dev.activePath, region)) });
    disks.push({
      diskId: disk.diskId,
      ok: false,
      activePath: dev.activePath,
      chain,
      qemuChain,
      chainOk: chainDetail === undefined,
      ...(chainDetail === undefined ? {} : { chainDetail }),
      regions,
    });
  }
  if (!options.flush && disks.some((d) => d.regions.some((r) => !r.ok))) {
    // Stale on disk, or really wrong? Have QEMU flush, then read the failed regions again.
    await flushLabVm(root, vmId);
    for (const d of disks) {
      for (const r of d.regions) {
        if (r.ok || !d.activePath) continue;
        if ((await checkRegion(d.activePath, r)).ok) {
          r.staleOnDisk = true;
          r.detail = `${r.detail ?? 'failed'}; reads correctly after QEMU flushed its caches: the image files were stale (not durable)`;
        }
      }
    }
  }
  for (const d of disks) d.ok = d.chainOk && d.regions.length > 0 && d.regions.every((r) => r.ok);
  return { vmId, ok: disks.every((d) => d.ok), disks };
}

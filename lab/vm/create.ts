/** Creating a lab VM (its disks with known data, its QEMU, its manifest) and destroying it. */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { describeIssues, idSchema } from '../../src/domain/input';
import { auxQmpSocketPath, imageDir, qmpSocketPath, vmRunDir } from '../../src/domain/layout';
import { ensureGuestArtifacts } from '../guest/artifacts';
import { GUEST_ACK_LOG, GUEST_CONSOLE_LOG, GUEST_CONSOLE_SOCKET, type LabGuest, resolveGuest } from '../guest/config';
import { writeDiskImages } from './images';
import {
  type CreateLabVmOptions,
  createLabVmOptionsSchema,
  type LabDisk,
  labDiskId,
  type LabManifest,
  type LabRegion,
  type LabVm,
  LabVmAlreadyRunningError,
  labVolumeId,
  layerPattern,
  LOG_FILE,
  MANIFEST_FILE,
  PID_FILE,
  readManifestIfAny,
  writeManifest,
} from './manifest';
import { canConnect, isOurQemu, killQemu, pidFilePath, runningLabVmPid, startQemu, stopLabVm } from './processes';
import { assertPlainPath, buildQemuArgs } from './qemu-args';

const MiB = 1024 * 1024;
/** sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL. */
const MAX_UNIX_SOCKET_PATH = 107;

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p, fsConstants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/** Other lab VMs in `runDir` that are running on disks of `storageRoot`. */
/** Running lab VMs other than `exceptVmId` with one of `diskIds` on `storageRoot`. */
async function runningVmsOnStorage(
  runDir: string,
  storageRoot: string,
  exceptVmId: string,
  diskIds: string[],
): Promise<string[]> {
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
    if (m && m.storageRoot === storageRoot && shares && (await runningLabVmPid(runDir, name)) !== undefined)
      users.push(name);
  }
  return users;
}

/**
 * Creates the disks of a lab VM (qcow2 chains with known data) and starts it, detached from this
 * process: by default booting the lab guest, whose writer writes to every disk from about 3 s on
 * (see lab/guest); with `guest: false` paused with no guest OS. Resolves when both QMP sockets accept connections.
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
  const others = await runningVmsOnStorage(
    runDir,
    storageRoot,
    vmId,
    Array.from({ length: opts.disks }, (_, d) => labDiskId(d, prefix)),
  );
  if (others.length > 0) {
    throw new Error(
      `storage root ${storageRoot} is in use by running lab VM(s) ${others.join(', ')}; use another storage root`,
    );
  }
  const R = opts.layerDataMiB * MiB;
  const K = opts.volumes;
  let guest: LabGuest | undefined;
  if (opts.guest !== false) {
    const artifacts = await ensureGuestArtifacts();
    guest = resolveGuest(opts.guest, {
      sizeMiB: opts.sizeMiB,
      patternEndMiB: (K + 1) * opts.layerDataMiB,
      vmDir: dir,
      kernel: artifacts.kernel,
      initrd: artifacts.initrd,
      nonce: randomBytes(8).toString('hex'),
    });
    if (Buffer.byteLength(guest.consoleSocket) > MAX_UNIX_SOCKET_PATH)
      throw new Error(
        `socket path ${guest.consoleSocket} is longer than ${MAX_UNIX_SOCKET_PATH} bytes; choose a shorter run dir`,
      );
  }
  const disks: LabDisk[] = [];
  for (let d = 0; d < opts.disks; d++) {
    const diskId = labDiskId(d, prefix);
    const idir = imageDir(storageRoot, diskId);
    const leftovers = (await exists(idir)) ? await fs.readdir(idir) : [];
    if (leftovers.length > 0) {
      const ours =
        stale !== undefined && stale.storageRoot === storageRoot && stale.disks.some((x) => x.diskId === diskId);
      if (!ours) {
        throw new Error(
          `${idir} already holds ${leftovers.length} file(s) not made by lab VM ${vmId}; ` +
            'destroy the lab VM that owns them or choose another storage root',
        );
      }
    }
    const volumeIds = Array.from({ length: K }, (_, i) => labVolumeId(d, i, prefix));
    const regions: LabRegion[] = volumeIds.map((_, i) => ({
      kind: 'layer',
      layer: i,
      offset: i * R,
      length: R,
      pattern: layerPattern(d, i),
    }));
    regions.push({ kind: 'overwrite', layer: K - 1, offset: K * R, length: R, pattern: layerPattern(d, K - 1) });
    disks.push({ diskId, deviceId: diskId, volumeIds, regions });
  }

  if (opts.blkdebug && !disks.some((d) => d.volumeIds.includes(opts.blkdebug!.volumeId)))
    throw new Error(`blkdebug names volume ${opts.blkdebug.volumeId}, which lab VM ${vmId} does not have`);

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
    ...(opts.blkdebug === undefined ? {} : { blkdebug: opts.blkdebug }),
    qmpSocket,
    auxQmpSocket,
    disks,
    ...(guest ? { guest } : {}),
  };

  // Leftovers of this VM's earlier life on this storage root (it may have had more disks) go.
  if (stale !== undefined && stale.storageRoot === storageRoot) {
    for (const d of stale.disks) await fs.rm(imageDir(storageRoot, d.diskId), { recursive: true, force: true });
  }
  await fs.mkdir(dir, { recursive: true });
  for (const f of [MANIFEST_FILE, PID_FILE, LOG_FILE]) await fs.rm(path.join(dir, f), { force: true });
  for (const s of [qmpSocket, auxQmpSocket]) await fs.rm(s, { force: true });
  // A guest's files from an earlier life of this VM id (a new run must not inherit its ACKs).
  for (const f of [GUEST_ACK_LOG, GUEST_CONSOLE_LOG, GUEST_CONSOLE_SOCKET])
    await fs.rm(path.join(dir, f), { force: true });

  const createdDirs: string[] = [];
  let pid: number | undefined;
  try {
    for (const disk of disks) {
      const idir = imageDir(storageRoot, disk.diskId);
      await fs.rm(idir, { recursive: true, force: true });
      await fs.mkdir(idir, { recursive: true });
      createdDirs.push(idir);
      await writeDiskImages(storageRoot, disk, disks.indexOf(disk), opts.sizeMiB, R); // disk d is labDiskId(d)
    }
    pid = await startQemu(buildQemuArgs(manifest, pidFile), pidFile, path.join(dir, LOG_FILE), [
      qmpSocket,
      auxQmpSocket,
    ]);
    manifest.pid = pid;
    await writeManifest(manifest);
    return manifest;
  } catch (err) {
    if (pid !== undefined && (await isOurQemu(pid, pidFile))) await killQemu(pid).catch(() => undefined);
    for (const d of createdDirs) await fs.rm(d, { recursive: true, force: true });
    throw err;
  }
}

/** Stops the VM and removes its disks' image dirs and its run dir. Idempotent. */
export async function destroyLabVm(runDir: string, vmId: string): Promise<void> {
  const root = path.resolve(runDir);
  await stopLabVm(root, vmId, { graceful: false });
  const manifest = await readManifestIfAny(root, vmId);
  if (manifest) {
    for (const disk of manifest.disks)
      await fs.rm(imageDir(manifest.storageRoot, disk.diskId), { recursive: true, force: true });
  }
  await fs.rm(vmRunDir(root, vmId), { recursive: true, force: true });
}

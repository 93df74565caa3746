/**
 * Starting a stopped lab VM again from the volumes its caller names, as a VM is started from its
 * definition after an offline merge: each disk opens the chain below its named volume as the
 * image headers give it. It starts paused with no guest OS (`-S`): QEMU opens the chains and
 * takes their image locks as a booting VM would, and the data is checked from outside
 * (`verifyLabVm`, the guest check). The manifest keeps what it recorded at creation.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { auxQmpSocketPath, imageDir, qmpSocketPath, vmRunDir, volumePath } from '../../src/domain/layout';
import { readHeaderChain } from './chain';
import { type LabDisk, type LabVm, LabVmAlreadyRunningError, LOG_FILE, readLabVm, writeManifest } from './manifest';
import { pidFilePath, runningLabVmPid, startQemu } from './processes';
import { buildQemuArgs } from './qemu-args';

export interface StartLabVmOptions {
  /** The volume each disk starts from, by disk id; a disk not named starts from its manifest's active volume. */
  activeVolumes?: Record<string, string>;
}

export interface LabVmStarted {
  vm: LabVm;
  /** The volumes each disk opened, by disk id, base first. */
  chains: Record<string, string[]>;
}

export async function startLabVm(runDir: string, vmId: string, options: StartLabVmOptions = {}): Promise<LabVmStarted> {
  const root = path.resolve(runDir);
  const vm = await readLabVm(root, vmId);
  const livePid = await runningLabVmPid(root, vmId);
  if (livePid !== undefined) throw new LabVmAlreadyRunningError(vmId, livePid, root);
  const named = options.activeVolumes ?? {};
  for (const diskId of Object.keys(named))
    if (!vm.disks.some((d) => d.diskId === diskId)) throw new Error(`lab VM ${vmId} has no disk ${diskId}`);

  const chains: Record<string, string[]> = {};
  const disks: LabDisk[] = [];
  for (const disk of vm.disks) {
    const active = named[disk.diskId] ?? disk.volumeIds[disk.volumeIds.length - 1];
    const volumeIds = await headerChainOf(vm.storageRoot, disk, active);
    chains[disk.diskId] = volumeIds;
    disks.push({ ...disk, volumeIds });
  }
  const pidFile = pidFilePath(root, vmId);
  for (const f of [pidFile, qmpSocketPath(root, vmId), auxQmpSocketPath(root, vmId)]) await fs.rm(f, { force: true });
  const { guest: _guest, ...withoutGuest } = vm;
  const pid = await startQemu(
    buildQemuArgs({ ...withoutGuest, disks }, pidFile),
    pidFile,
    path.join(vmRunDir(root, vmId), LOG_FILE),
    [vm.qmpSocket, vm.auxQmpSocket],
  );
  const started = { ...vm, pid };
  await writeManifest(started);
  return { vm: started, chains };
}

/** The disk's volume ids from `active` down, base first, as the headers name them; every one a volume of this disk. */
async function headerChainOf(storageRoot: string, disk: LabDisk, active: string): Promise<string[]> {
  const activePath = volumePath(storageRoot, disk.diskId, active);
  try {
    await fs.access(activePath);
  } catch {
    throw new Error(`disk ${disk.diskId} has no volume ${active} (${activePath})`);
  }
  const dir = imageDir(storageRoot, disk.diskId);
  return (await readHeaderChain(activePath))
    .map((file) => {
      const id = path.basename(file, '.qcow2');
      if (path.dirname(file) !== dir || !disk.volumeIds.includes(id))
        throw new Error(`the chain of ${activePath} goes through ${file}, not a volume of disk ${disk.diskId}`);
      return id;
    })
    .reverse();
}

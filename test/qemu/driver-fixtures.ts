/** The conformance suite's fixtures: a fresh VM per case on each driver, and how each refuses. */
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { createLibvirtLabVm, destroyLibvirtLabVm, libvirtLabVmPid } from '../../lab/libvirt/domain';
import { SimDriver } from '../../lab/sim/sim-driver';
import { crashLabVm, createLabVm, destroyLabVm, labDiskId, labVolumeId } from '../../lab/vm';
import { DEFAULT_LIBVIRT_URI } from '../../src/config/worker-config';
import { volumePath } from '../../src/domain/layout';
import type { HypervisorDriver } from '../../src/drivers/driver';
import { LibvirtDriver } from '../../src/drivers/libvirt/libvirt-driver';
import { VirshCommandError } from '../../src/drivers/libvirt/virsh';
import { QmpCommandError } from '../../src/drivers/qmp/errors';
import { QmpDriver } from '../../src/drivers/qmp/qmp-driver';

const MiB = 1024 * 1024;
/** A speed that keeps a commit running for seconds (the lab top holds 2 MiB; the sim top 16 MiB). */
export const SLOW = 128 * 1024;

export interface Fixture {
  driver: HypervisorDriver;
  /** The error class of a request the hypervisor refuses. */
  refused: new (...args: never[]) => Error;
  /** QEMU keeps the removed top's nodes until they are deleted; libvirt detaches them itself. */
  keepsRemovedNodes: boolean;
  storageRoot: string;
  /** A fresh running VM; returns its id. */
  newVm(): Promise<string>;
  /** QEMU dies (SIGKILL), its socket left behind. */
  killVm(vmId: string): Promise<void>;
  close(): Promise<void>;
}

function tmpRoot(): { dir: string; storageRoot: string; runDir: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lm-conf-'));
  return { dir, storageRoot: path.join(dir, 's'), runDir: path.join(dir, 'r') };
}

export async function qmpFixture(): Promise<Fixture> {
  const { dir, storageRoot, runDir } = tmpRoot();
  const driver = new QmpDriver(runDir);
  const vms: string[] = [];
  return {
    driver,
    refused: QmpCommandError,
    keepsRemovedNodes: true,
    storageRoot,
    async newVm() {
      const vmId = `vm${vms.length}`;
      vms.push(vmId);
      // Each VM its own storage root: the lab refuses two running VMs on one.
      await createLabVm({
        storageRoot: path.join(storageRoot, vmId),
        runDir,
        vmId,
        disks: 2,
        volumes: 3,
        layerDataMiB: 1,
        sizeMiB: 8,
        guest: false, // paused, no guest OS: the conformance cases need no writes
      });
      return vmId;
    },
    async killVm(vmId) {
      await crashLabVm(runDir, vmId);
    },
    async close() {
      await driver.close();
      for (const vmId of vms) await destroyLabVm(runDir, vmId).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function simFixture(): Promise<Fixture> {
  const { dir, storageRoot } = tmpRoot();
  const driver = new SimDriver({ seed: 7, bytesPerSecond: 256 * MiB });
  let n = 0;
  return {
    driver,
    refused: QmpCommandError,
    keepsRemovedNodes: true,
    storageRoot,
    async newVm() {
      const vmId = `vm${n++}`;
      const root = path.join(storageRoot, vmId);
      driver.addVm(
        vmId,
        [0, 1].map((d) => ({
          diskId: labDiskId(d),
          volumes: [2, 1, 0].map((i) => volumePath(root, labDiskId(d), labVolumeId(d, i))),
          sizeBytes: 16 * MiB,
        })),
      );
      return vmId;
    },
    async killVm(vmId) {
      driver.removeVm(vmId);
    },
    async close() {
      await driver.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function libvirtFixture(): Promise<Fixture> {
  const { dir, storageRoot, runDir } = tmpRoot();
  const driver = new LibvirtDriver({ uri: DEFAULT_LIBVIRT_URI, runDir });
  // Domain names are host-wide: a prefix of this run keeps parallel runs apart.
  const prefix = `lmconf${process.pid}x`;
  const vms: string[] = [];
  return {
    driver,
    refused: VirshCommandError,
    keepsRemovedNodes: false,
    storageRoot,
    async newVm() {
      const vmId = `${prefix}${vms.length}`;
      vms.push(vmId);
      await createLibvirtLabVm({ storageRoot: path.join(storageRoot, vmId), vmId, disks: 2, volumes: 3, sizeMiB: 8 });
      return vmId;
    },
    async killVm(vmId) {
      const pid = await libvirtLabVmPid(vmId);
      if (pid === undefined) throw new Error(`domain ${vmId} is not running`);
      process.kill(pid, 'SIGKILL');
      while ((await libvirtLabVmPid(vmId)) !== undefined) await new Promise((r) => setTimeout(r, 20));
      // libvirt notices its QEMU's end by the monitor's EOF, just after.
      for (let i = 0; i < 100; i++) {
        try {
          await driver.listJobs(vmId);
        } catch {
          return;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async close() {
      await driver.close();
      for (const vmId of vms) await destroyLibvirtLabVm({ uri: DEFAULT_LIBVIRT_URI, vmId }).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

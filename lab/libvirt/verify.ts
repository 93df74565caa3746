/**
 * Verifying a libvirt lab VM: each disk's chain as libvirt reports it (`virsh dumpxml`) must equal
 * the chain its image headers name, base last; and, once the domain is stopped (its QEMU then has
 * written its caches back), every region's data pattern read through the chain.
 */
import * as path from 'node:path';

import { LibvirtDriver } from '../../src/drivers/libvirt/libvirt-driver';
import { readHeaderChain } from '../vm/chain';
import type { LabDisk } from '../vm/manifest';
import { checkRegion, type RegionReport } from '../vm/verify';
import { destroyLibvirtLabVm, type LibvirtLabVm } from './domain';

export interface LibvirtDiskReport {
  diskId: string;
  activePath: string;
  /** Volume ids top → base from `virsh dumpxml`. */
  libvirtChain: string[];
  /** The same from the image headers. */
  headerChain: string[];
  chainOk: boolean;
}

const volumeId = (p: string): string => path.basename(p, '.qcow2');

/** The chains libvirt reports against the image headers, while the domain runs. */
export async function verifyLibvirtChains(vm: LibvirtLabVm, runDir: string): Promise<LibvirtDiskReport[]> {
  const driver = new LibvirtDriver({ uri: vm.uri, runDir });
  try {
    const chains = await driver.readAllChains(vm.vmId);
    const reports: LibvirtDiskReport[] = [];
    for (const disk of vm.disks) {
      const chain = chains.find((c) => c.diskId === disk.diskId);
      if (!chain) throw new Error(`domain ${vm.vmId} has no disk ${disk.diskId}`);
      const activePath = chain.volumes[0].path;
      const libvirtChain = chain.volumes.map((v) => volumeId(v.path));
      const headerChain = (await readHeaderChain(activePath)).map(volumeId);
      const chainOk =
        libvirtChain.join() === headerChain.join() && libvirtChain[libvirtChain.length - 1] === disk.volumeIds[0];
      reports.push({ diskId: disk.diskId, activePath, libvirtChain, headerChain, chainOk });
    }
    return reports;
  } finally {
    await driver.close();
  }
}

/** Stops the domain, then reads every region of each disk through its last active layer. */
export async function stopAndCheckData(
  vm: LibvirtLabVm,
  disks: LibvirtDiskReport[],
): Promise<Array<RegionReport & { diskId: string }>> {
  await destroyLibvirtLabVm(vm);
  const out: Array<RegionReport & { diskId: string }> = [];
  for (const d of disks) {
    const disk: LabDisk | undefined = vm.disks.find((x) => x.diskId === d.diskId);
    for (const region of disk?.regions ?? []) {
      const r = await checkRegion(d.activePath, region);
      out.push({ diskId: d.diskId, ...region, ...r });
    }
  }
  return out;
}

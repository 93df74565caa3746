/**
 * Verifying a lab VM: every disk's chain (image headers and QEMU's graph agree, base last, volumes
 * in order) and every region's data pattern, read from the image files while the VM runs.
 */
import * as path from 'node:path';

import { volumeIdOf } from '../../src/domain/layout';
import { QmpDriver } from '../../src/drivers/qmp/qmp-driver';
import { queryLabVmDevices, queryLabVmNodes, readHeaderChain } from './chain';
import { checkNodeName, hexPattern, type LabDisk, type LabRegion, readLabVm } from './manifest';
import { run } from './processes';

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
  if (!r.stdout.includes(`read ${region.length}/${region.length} bytes`))
    return { ok: false, detail: `qemu-io ${cmd} did not report the read: ${out}` };
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

/**
 * Makes QEMU write every qcow2 node's cached metadata to its image file (the product's
 * `QmpDriver.flushNode` per node, on the aux socket: no change of run state, unlike `stop`).
 * Returns the flushed node names.
 */
export async function flushLabVm(runDir: string, vmId: string): Promise<string[]> {
  const root = path.resolve(runDir);
  const all = await queryLabVmNodes(root, vmId);
  const nodes = [...new Set(all.filter((n) => n.drv === 'qcow2').map((n) => n['node-name']))];
  const driver = new QmpDriver(root, { useAuxSocket: true });
  try {
    for (const node of nodes) {
      checkNodeName(node);
      await driver.flushNode(vmId, node);
    }
  } finally {
    await driver.close();
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
      disks.push({
        diskId: disk.diskId,
        ok: false,
        chain: [],
        qemuChain: [],
        chainOk: false,
        chainDetail: `QEMU has no device ${disk.deviceId}`,
        regions: [],
      });
      continue;
    }
    let chain: string[] = [];
    let chainDetail: string | undefined;
    try {
      chain = (await readHeaderChain(dev.activePath)).map((p) => toId(disk.diskId, p));
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

/**
 * Lab VMs that libvirt manages: transient domains (`virsh create`, type `qemu`, TCG) on the lab's
 * qcow2 chains (lab/vm/images.ts: the same data pattern in every layer), paused with no guest OS.
 * A disk's `<serial>` is its disk id, which the libvirt driver reads as the product's disk id.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { XMLBuilder } from 'fast-xml-parser';
import { z } from 'zod';

import { describeIssues, idSchema } from '../../src/domain/input';
import { imageDir, volumePath } from '../../src/domain/layout';
import { writeDiskImages } from '../vm/images';
import { type LabDisk, labDiskId, labVolumeId, layerPattern } from '../vm/manifest';

const run = promisify(execFile);
const MiB = 1024 * 1024;
export const DEFAULT_LIBVIRT_URI = 'qemu:///system';

export const libvirtLabVmOptionsSchema = z
  .object({
    uri: z.string().min(1).default(DEFAULT_LIBVIRT_URI),
    storageRoot: z.string().min(1),
    vmId: idSchema,
    disks: z.number().int().min(1).max(4).default(1),
    volumes: z.number().int().min(2).max(8).default(3),
    layerDataMiB: z.number().int().min(1).max(256).default(1),
    sizeMiB: z.number().int().min(8).max(4096).default(64),
    idPrefix: z
      .string()
      .regex(/^[a-z0-9-]*$/)
      .default(''),
  })
  .strict();
export type LibvirtLabVmOptions = z.input<typeof libvirtLabVmOptionsSchema>;

export interface LibvirtLabVm {
  uri: string;
  vmId: string;
  storageRoot: string;
  disks: LabDisk[];
}

/** Writes the chains under `<storageRoot>/images/` and starts the domain paused. */
export async function createLibvirtLabVm(options: LibvirtLabVmOptions): Promise<LibvirtLabVm> {
  const parsed = libvirtLabVmOptionsSchema.safeParse(options);
  if (!parsed.success) throw new Error(`invalid libvirt lab VM options: ${describeIssues(parsed.error)}`);
  const o = parsed.data;
  const storageRoot = path.resolve(o.storageRoot);
  const R = o.layerDataMiB * MiB;
  const disks: LabDisk[] = [];
  for (let d = 0; d < o.disks; d++) {
    const diskId = labDiskId(d, o.idPrefix);
    const volumeIds = Array.from({ length: o.volumes }, (_, i) => labVolumeId(d, i, o.idPrefix));
    const disk: LabDisk = {
      diskId,
      deviceId: diskId,
      volumeIds,
      regions: [
        ...volumeIds.map((_, i) => ({
          kind: 'layer' as const,
          layer: i,
          offset: i * R,
          length: R,
          pattern: layerPattern(d, i),
        })),
        {
          kind: 'overwrite',
          layer: o.volumes - 1,
          offset: o.volumes * R,
          length: R,
          pattern: layerPattern(d, o.volumes - 1),
        },
      ],
    };
    await fs.mkdir(imageDir(storageRoot, diskId), { recursive: true });
    await writeDiskImages(storageRoot, disk, d, o.sizeMiB, R);
    disks.push(disk);
  }
  const xmlFile = path.join(storageRoot, `${o.vmId}.domain.xml`);
  await fs.writeFile(xmlFile, domainXml(o.vmId, storageRoot, disks));
  await run('virsh', ['-q', '-c', o.uri, 'create', xmlFile, '--paused'], { timeout: 60_000 });
  return { uri: o.uri, vmId: o.vmId, storageRoot, disks };
}

/** Destroys the domain if it runs (a transient domain then is gone); idempotent. */
export async function destroyLibvirtLabVm(vm: Pick<LibvirtLabVm, 'uri' | 'vmId'>): Promise<void> {
  try {
    await run('virsh', ['-q', '-c', vm.uri, 'destroy', vm.vmId], { timeout: 60_000 });
  } catch (err) {
    if (!/failed to get domain|not running/i.test(String((err as { stderr?: string }).stderr ?? err))) throw err;
  }
}

/** The domain's QEMU pid (libvirt's pid file), or undefined when it does not run. */
export async function libvirtLabVmPid(vmId: string, pidDir = '/run/libvirt/qemu'): Promise<number | undefined> {
  try {
    const pid = Number((await fs.readFile(path.join(pidDir, `${vmId}.pid`), 'utf8')).trim());
    await fs.access(`/proc/${pid}`);
    return pid;
  } catch {
    return undefined;
  }
}

/** The domain's XML: virtio disks vda, vdb, … on each chain's active volume, serial = disk id. */
export function domainXml(vmId: string, storageRoot: string, disks: LabDisk[]): string {
  const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@', format: true });
  const disk = (d: LabDisk, i: number) => ({
    '@type': 'file',
    '@device': 'disk',
    driver: { '@name': 'qemu', '@type': 'qcow2' },
    source: { '@file': volumePath(storageRoot, d.diskId, d.volumeIds[d.volumeIds.length - 1]) },
    target: { '@dev': `vd${String.fromCharCode(97 + i)}`, '@bus': 'virtio' },
    serial: d.diskId,
  });
  return builder.build({
    domain: {
      '@type': 'qemu',
      name: vmId,
      memory: { '@unit': 'MiB', '#text': 64 },
      vcpu: 1,
      os: { type: { '@arch': 'x86_64', '@machine': 'pc', '#text': 'hvm' } },
      on_poweroff: 'destroy',
      devices: { emulator: '/usr/bin/qemu-system-x86_64', disk: disks.map(disk) },
    },
  }) as string;
}

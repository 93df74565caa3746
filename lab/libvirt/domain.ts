/**
 * Lab VMs that libvirt manages: transient domains (`virsh create`, type `qemu`, TCG), or persistent
 * ones (`virsh define`, then `start`) whose definition outlives a shut-off, on the lab's qcow2
 * chains (lab/vm/images.ts: the same data pattern in every layer), paused with no guest OS, or
 * with `guest` booting the lab guest (lab/guest: the same guest and files as the QMP lab's).
 * A disk's `<serial>` is its disk id, which the libvirt driver reads as the product's disk id.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { XMLBuilder } from 'fast-xml-parser';
import { z } from 'zod';

import { DEFAULT_LIBVIRT_URI } from '../../src/config/worker-config';
import { describeIssues, idSchema } from '../../src/domain/input';
import { imageDir, vmRunDir, volumePath } from '../../src/domain/layout';
import { ensureGuestArtifacts } from '../guest/artifacts';
import {
  GUEST_ACK_LOG,
  GUEST_CONSOLE_LOG,
  GUEST_CONSOLE_SOCKET,
  guestKernelCmdline,
  type LabGuest,
  labGuestOptionsSchema,
  resolveGuest,
} from '../guest/config';
import { writeDiskImages } from '../vm/images';
import { type LabDisk, labDiskId, labVolumeId, layerPattern } from '../vm/manifest';

const run = promisify(execFile);
const MiB = 1024 * 1024;
/** sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL. */
const MAX_UNIX_SOCKET_PATH = 107;

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
    /** Where a guest's files go (`<runDir>/<vmId>/`, as in the QMP lab); required with `guest`. */
    runDir: z.string().min(1).optional(),
    /** Boots the lab guest instead of starting the domain paused. */
    guest: labGuestOptionsSchema.optional(),
    /**
     * A persistent domain (`virsh define`, then `start`): its inactive XML outlives a shut-off, as
     * a managed VM's definition does. Default: transient (`virsh create`), gone once it stops.
     */
    persistent: z.boolean().default(false),
  })
  .strict()
  .refine((o) => o.guest === undefined || o.runDir !== undefined, 'a guest needs runDir for its files');
export type LibvirtLabVmOptions = z.input<typeof libvirtLabVmOptionsSchema>;

export interface LibvirtLabVm {
  uri: string;
  vmId: string;
  storageRoot: string;
  sizeMiB: number;
  disks: LabDisk[];
  /** The guest it boots, if any (its ACK log, console socket and log under `<runDir>/<vmId>/`). */
  guest?: LabGuest;
  persistent: boolean;
}

/** Writes the chains under `<storageRoot>/images/` and starts the domain: paused, or booting the guest. */
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
  const guest = o.guest && o.runDir ? await prepareGuest(o, o.guest, o.runDir) : undefined;
  const xmlFile = path.join(storageRoot, `${o.vmId}.domain.xml`);
  await fs.writeFile(xmlFile, domainXml(o.vmId, storageRoot, disks, guest));
  if (o.persistent) {
    await run('virsh', ['-q', '-c', o.uri, 'define', xmlFile], { timeout: 60_000 });
    await startLibvirtLabVm({ uri: o.uri, vmId: o.vmId, guest });
  } else {
    await run('virsh', ['-q', '-c', o.uri, 'create', xmlFile, ...pausedUnless(guest)], { timeout: 60_000 });
  }
  return {
    uri: o.uri,
    vmId: o.vmId,
    storageRoot,
    sizeMiB: o.sizeMiB,
    disks,
    persistent: o.persistent,
    ...(guest ? { guest } : {}),
  };
}

/** The guest's files in a fresh `<runDir>/<vmId>/` (a new run must not inherit an earlier one's ACKs). */
async function prepareGuest(
  o: z.output<typeof libvirtLabVmOptionsSchema>,
  options: z.output<typeof labGuestOptionsSchema>,
  runDir: string,
): Promise<LabGuest> {
  const vmDir = vmRunDir(path.resolve(runDir), o.vmId);
  const artifacts = await ensureGuestArtifacts();
  const guest = resolveGuest(options, {
    sizeMiB: o.sizeMiB,
    patternEndMiB: (o.volumes + 1) * o.layerDataMiB,
    vmDir,
    kernel: artifacts.kernel,
    initrd: artifacts.initrd,
    nonce: randomBytes(8).toString('hex'),
  });
  if (Buffer.byteLength(guest.consoleSocket) > MAX_UNIX_SOCKET_PATH)
    throw new Error(`socket path ${guest.consoleSocket} is longer than ${MAX_UNIX_SOCKET_PATH} bytes`);
  await fs.mkdir(vmDir, { recursive: true });
  for (const f of [GUEST_ACK_LOG, GUEST_CONSOLE_LOG, GUEST_CONSOLE_SOCKET])
    await fs.rm(path.join(vmDir, f), { force: true });
  return guest;
}

/** Destroys the domain if it runs and removes its definition if it has one; idempotent. */
export async function destroyLibvirtLabVm(vm: Pick<LibvirtLabVm, 'uri' | 'vmId'>): Promise<void> {
  await shutOffLibvirtLabVm(vm);
  await virshUnlessGone(vm, ['undefine', vm.vmId]);
}

/**
 * Shuts the domain off at once (`virsh destroy`, as a host crash or a kill would): a persistent one
 * keeps its definition and can be started again; a transient one is gone. Idempotent.
 */
export async function shutOffLibvirtLabVm(vm: Pick<LibvirtLabVm, 'uri' | 'vmId'>): Promise<void> {
  await virshUnlessGone(vm, ['destroy', vm.vmId]);
}

/** Starts a shut-off persistent domain from its inactive XML: paused with no guest OS, or booting its guest. */
export async function startLibvirtLabVm(vm: Pick<LibvirtLabVm, 'uri' | 'vmId' | 'guest'>): Promise<void> {
  await run('virsh', ['-q', '-c', vm.uri, 'start', vm.vmId, ...pausedUnless(vm.guest)], { timeout: 60_000 });
}

/** A domain with no guest OS starts paused (`--paused` of `virsh create` and `start`). */
function pausedUnless(guest: LabGuest | undefined): string[] {
  return guest ? [] : ['--paused'];
}

/** `virsh <args>` where a domain that is not there (or not running) is already the wanted end. */
async function virshUnlessGone(vm: Pick<LibvirtLabVm, 'uri'>, args: string[]): Promise<void> {
  try {
    await run('virsh', ['-q', '-c', vm.uri, ...args], { timeout: 60_000 });
  } catch (err) {
    // "Domain not found": libvirt still listed a domain that ended meanwhile (a guest's power-off).
    const stderr = String((err as { stderr?: string }).stderr ?? err);
    if (!/failed to get domain|not running|domain not found/i.test(stderr)) throw err;
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

/**
 * The domain's XML: virtio disks vda, vdb, … on each chain's active volume, serial = disk id. With a
 * guest: its kernel, initramfs and command line, ended (not restarted) by a power-off, reboot or
 * crash; serial 0 the console (a unix socket libvirt binds, logged), serial 1 the writer's ACK
 * lines appended to the ACK log.
 */
export function domainXml(vmId: string, storageRoot: string, disks: LabDisk[], guest?: LabGuest): string {
  const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: '@', format: true });
  const disk = (d: LabDisk, i: number) => ({
    '@type': 'file',
    '@device': 'disk',
    driver: { '@name': 'qemu', '@type': 'qcow2' },
    source: { '@file': volumePath(storageRoot, d.diskId, d.volumeIds[d.volumeIds.length - 1]) },
    target: { '@dev': `vd${String.fromCharCode(97 + i)}`, '@bus': 'virtio' },
    serial: d.diskId,
  });
  const type = { '@arch': 'x86_64', '@machine': 'pc', '#text': 'hvm' };
  return builder.build({
    domain: {
      '@type': 'qemu',
      name: vmId,
      memory: { '@unit': 'MiB', '#text': guest?.memoryMiB ?? 64 },
      vcpu: 1,
      os: guest
        ? { type, kernel: guest.kernel, initrd: guest.initrd, cmdline: guestKernelCmdline(guest, disks.length) }
        : { type },
      // ACPI: the writer's power-off must end the domain.
      ...(guest ? { features: { acpi: '' } } : {}),
      on_poweroff: 'destroy',
      on_reboot: 'destroy',
      on_crash: 'destroy',
      devices: {
        emulator: '/usr/bin/qemu-system-x86_64',
        disk: disks.map(disk),
        ...(guest ? { serial: guestSerials(guest) } : {}),
      },
    },
  }) as string;
}

function guestSerials(g: LabGuest): object[] {
  return [
    {
      '@type': 'unix',
      source: { '@mode': 'bind', '@path': g.consoleSocket },
      log: { '@file': g.consoleLog, '@append': 'on' },
      target: { '@port': 0 },
    },
    { '@type': 'file', source: { '@path': g.ackLog, '@append': 'on' }, target: { '@port': 1 } },
  ];
}

/** A lab VM's chains: as QEMU's block graph has them, and as the image headers say. */
import * as path from 'node:path';

import { z } from 'zod';

import { describeIssues } from '../../src/domain/input';
import {
  type BlockDeviceInfo,
  deviceIdOf,
  flattenImageChain,
  type NodeFiles,
  nodeFilesOf,
  queryBlockSchema,
  queryNamedBlockNodesSchema,
} from '../../src/drivers/qmp/schemas';
import { LabVmNotRunningError } from './manifest';
import { LabCommandError, runningLabVmPid, runOk } from './processes';
import { auxQmpCommand } from './qmp';

export interface LiveDevice {
  deviceId: string;
  /** The file the device writes to. */
  activePath: string;
  /** The chain as QEMU's block graph has it: absolute file paths, top → base. */
  qemuChain: string[];
}

/** Every block node of the running VM (`query-named-block-nodes`, flat), on its aux socket. */
export async function queryLabVmNodes(runDir: string, vmId: string): Promise<BlockDeviceInfo[]> {
  const parsed = queryNamedBlockNodesSchema.safeParse(
    await auxQmpCommand(runDir, vmId, 'query-named-block-nodes', { flat: true }),
  );
  if (!parsed.success) throw new Error(`unexpected query-named-block-nodes answer: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

const isPseudoFilename = (filename: string): boolean => filename.startsWith('json:');

/** Every virtio-blk device of the running VM with QEMU's view of its chain (one aux QMP call or two). */
export async function queryLabVmDevices(runDir: string, vmId: string): Promise<LiveDevice[]> {
  const root = path.resolve(runDir);
  if ((await runningLabVmPid(root, vmId)) === undefined) throw new LabVmNotRunningError(vmId, root);
  const parsed = queryBlockSchema.safeParse(await auxQmpCommand(root, vmId, 'query-block'));
  if (!parsed.success) throw new Error(`unexpected query-block answer: ${describeIssues(parsed.error)}`);
  let nodeFiles: NodeFiles | undefined;
  const devices: LiveDevice[] = [];
  for (const block of parsed.data) {
    const deviceId = deviceIdOf(block);
    if (!block.inserted || deviceId === undefined) continue;
    let files = flattenImageChain(block.inserted.image, nodeFiles);
    if (nodeFiles === undefined && files.some(isPseudoFilename)) {
      // A `json:{…}` pseudo-filename whose `file` is a node-name reference: the node list resolves it.
      nodeFiles = nodeFilesOf(await queryLabVmNodes(root, vmId));
      files = flattenImageChain(block.inserted.image, nodeFiles);
    }
    const unresolved = files.find(isPseudoFilename);
    if (unresolved !== undefined) throw new Error(`cannot resolve QEMU pseudo-filename ${unresolved} of ${deviceId}`);
    const qemuChain = files.map((f) => path.resolve(f));
    devices.push({ deviceId, activePath: qemuChain[0], qemuChain });
  }
  return devices;
}

/** The file the VM's device `diskId` currently writes to, read from the running QEMU. */
export async function activeVolumePath(runDir: string, vmId: string, diskId: string): Promise<string> {
  const devices = await queryLabVmDevices(runDir, vmId);
  const dev = devices.find((d) => d.deviceId === diskId);
  if (!dev)
    throw new Error(
      `lab VM ${vmId} has no block device ${diskId} (devices: ${devices.map((d) => d.deviceId).join(', ') || 'none'})`,
    );
  return dev.activePath;
}

const imgInfoChainSchema = z
  .array(z.looseObject({ filename: z.string(), 'backing-filename': z.string().optional() }))
  .min(1);

/**
 * The chain the image headers describe (`qemu-img info --backing-chain`; not QEMU's view, which
 * `queryLabVmDevices` and the product's `QmpDriver.readChain` read), from `activePath` down:
 * absolute paths, top → base.
 * Uses `-U` (no lock): the running VM holds the write lock on its images.
 */
export async function readHeaderChain(activePath: string): Promise<string[]> {
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

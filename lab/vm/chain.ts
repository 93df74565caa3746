/** A lab VM's chains: as QEMU's block graph has them, and as the image headers say. */
import * as path from 'node:path';
import { z } from 'zod';
import { describeIssues } from '../../src/domain/input';
import { LabCommandError, runOk, runningLabVmPid } from './processes';
import { LabVmNotRunningError } from './manifest';
import { auxQmpCommand } from './qmp';

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

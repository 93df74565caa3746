import { execFile } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { type LabVm, readLabVm } from '../vm';
import type { ClusterHost } from './cluster';
import { inNetns } from './netns';

const run = promisify(execFile);
const repoRoot = path.resolve(__dirname, '../..');

/**
 * A paused lab VM (no guest OS) on a cluster host: its QEMU runs inside the host's network
 * namespace, as on a real hypervisor host, where the agent finds it by its QMP socket (the
 * agent's check of who uses a volume sees only the unix sockets of its own network namespace).
 */
export async function createHostLabVm(
  host: ClusterHost,
  opts: { vmId: string; disks: number; volumes: number; layerDataMiB: number; sizeMiB: number },
): Promise<LabVm> {
  const argv = inNetns(host.netns, [process.execPath, '--import', 'tsx', path.join(repoRoot, 'lab/cli.ts'), 'create']);
  const flags = ['--vm-id', opts.vmId, '--run-dir', host.runDir, '--storage-root', host.storageRoot];
  flags.push('--disks', String(opts.disks), '--volumes', String(opts.volumes));
  flags.push('--layer-data-mib', String(opts.layerDataMiB), '--size-mib', String(opts.sizeMiB), '--paused');
  await run(argv[0], [...argv.slice(1), ...flags], { cwd: repoRoot, timeout: 120_000 });
  return readLabVm(host.runDir, opts.vmId);
}

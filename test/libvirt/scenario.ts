import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { createLibvirtLabVm, type LibvirtLabVm } from '../../lab/libvirt/domain';
import { stopAndCheckData, verifyLibvirtChains } from '../../lab/libvirt/verify';
import type { LiveMergeRequest } from '../../src/domain/input';
import { volumePath } from '../../src/domain/layout';
import type { FaultStack } from '../harness/process-stack';

const run = promisify(execFile);
const ENSURE = path.resolve(__dirname, '../../scripts/ensure-libvirt.sh');
/** libvirtd's own pid file (it runs as root). */
const LIBVIRTD_PID_FILE = '/run/libvirtd.pid';

/** Domain names are host-wide: this run's prefix keeps them apart from any other run's. */
export function domainName(name: string): string {
  return `lm${process.pid}-${name}`;
}

/** A paused libvirt domain on lab chains under the stack's storage root (one image dir per disk). */
export function libvirtVm(
  stack: FaultStack,
  name: string,
  disks: number,
  layerDataMiB = 1,
  idPrefix = '',
): Promise<LibvirtLabVm> {
  return createLibvirtLabVm({
    storageRoot: stack.storageRoot,
    vmId: domainName(name),
    disks,
    volumes: 3,
    layerDataMiB,
    idPrefix,
    sizeMiB: 5 * layerDataMiB + 8,
  });
}

/** Top out of libvirt's chain and of the storage, base in, headers agreeing; then the data, VM stopped. */
export async function expectLibvirtMerged(stack: FaultStack, vm: LibvirtLabVm, request: LiveMergeRequest) {
  const disks = await verifyLibvirtChains(vm, stack.runDir);
  for (const d of request.disks) {
    const report = disks.find((x) => x.diskId === d.diskId)!;
    expect(report.chainOk).toBe(true);
    expect(report.libvirtChain).not.toContain(d.topVolumeId);
    expect(report.libvirtChain).toContain(d.baseVolumeId);
    expect(existsSync(volumePath(stack.storageRoot, d.diskId, d.topVolumeId))).toBe(false);
  }
  for (const disk of vm.disks)
    for (const v of disk.volumeIds) {
      const top = request.disks.some((d) => d.topVolumeId === v);
      expect([v, existsSync(volumePath(stack.storageRoot, disk.diskId, v))]).toEqual([v, !top]);
    }
  const regions = await stopAndCheckData(vm, disks);
  expect(regions.filter((r) => !r.ok)).toEqual([]);
  return disks;
}

export function libvirtdPid(): number {
  return Number(readFileSync(LIBVIRTD_PID_FILE, 'utf8').trim());
}

/** SIGKILL to libvirtd by its pid; resolves once it is gone. QEMU runs on. */
export async function killLibvirtd(): Promise<number> {
  const pid = libvirtdPid();
  process.kill(pid, 'SIGKILL');
  while (existsSync(`/proc/${pid}`)) await new Promise((r) => setTimeout(r, 20));
  return pid;
}

/** Starts libvirtd again the way the set-up does, and waits until it answers. */
export async function startLibvirtd(): Promise<void> {
  await run('bash', [ENSURE], { timeout: 120_000 });
}

/** Resolves once libvirt shows a block job on the domain's disk `target` (a `virsh blockjob --info`). */
export async function untilJobRuns(vm: LibvirtLabVm, target: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await run('virsh', ['-q', '-c', vm.uri, 'blockjob', vm.vmId, target, '--info', '--raw']);
    if (r.stdout.includes('cur=')) return;
    if (Date.now() > deadline) throw new Error(`no block job on ${vm.vmId} ${target}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

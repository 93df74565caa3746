/**
 * Shut-off libvirt domains merged offline through the whole product (host agent with
 * `--driver libvirt`). A persistent domain keeps its definition: an active commit points its
 * inactive XML at the base, and the domain then starts on the merged chain. A transient domain is
 * gone once shut off: its definition is the caller's, and the result names the volumes.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

import { WorkflowFailedError } from '@temporalio/client';

import {
  createLibvirtLabVm,
  destroyLibvirtLabVm,
  type LibvirtLabVm,
  shutOffLibvirtLabVm,
  startLibvirtLabVm,
} from '../../lab/libvirt/domain';
import { stopAndCheckData, verifyLibvirtChains } from '../../lab/libvirt/verify';
import { lockedImageCommitPid } from '../../lab/vm';
import type { LiveMergeRequest } from '../../src/domain/input';
import { volumePath } from '../../src/domain/layout';
import { stackPerFile } from '../harness/file-stack';
import { mergeRequest } from '../harness/merge-request';
import type { FaultStack } from '../harness/process-stack';
import { startMerge } from '../harness/scenario';
import { until } from '../harness/until';
import { domainName, untilJobRuns } from './scenario';

jest.setTimeout(240_000);
const run = promisify(execFile);

const vms: LibvirtLabVm[] = [];
afterAll(async () => {
  for (const vm of vms) await destroyLibvirtLabVm(vm).catch(() => undefined);
});

async function shutOffVm(stack: FaultStack, name: string, persistent: boolean, prefix: string): Promise<LibvirtLabVm> {
  const vm = await createLibvirtLabVm({
    storageRoot: stack.storageRoot,
    vmId: domainName(name),
    disks: 2,
    volumes: 3,
    layerDataMiB: 2,
    idPrefix: prefix,
    sizeMiB: 18,
    persistent,
  });
  vms.push(vm);
  await shutOffLibvirtLabVm(vm);
  return vm;
}

const inactiveSource = async (vm: LibvirtLabVm): Promise<string[]> =>
  [
    ...(await run('virsh', ['-q', '-c', vm.uri, 'dumpxml', '--inactive', vm.vmId])).stdout.matchAll(
      /<source file='([^']+)'/g,
    ),
  ].map((m) => m[1]);

/** The domain runs on the merged chains, its data reads right, every volume is clean, only the tops are gone. */
async function expectRunsMerged(stack: FaultStack, vm: LibvirtLabVm, request: LiveMergeRequest): Promise<void> {
  const disks = await verifyLibvirtChains(vm, stack.runDir);
  for (const d of request.disks) {
    const report = disks.find((x) => x.diskId === d.diskId)!;
    expect([d.diskId, report.chainOk, report.libvirtChain.includes(d.topVolumeId)]).toEqual([d.diskId, true, false]);
  }
  const regions = await stopAndCheckData(vm, disks);
  expect(regions.filter((r) => !r.ok)).toEqual([]);
  for (const disk of vm.disks)
    for (const v of disk.volumeIds) {
      const image = volumePath(stack.storageRoot, disk.diskId, v);
      const top = request.disks.some((d) => d.topVolumeId === v);
      expect([v, existsSync(image)]).toEqual([v, !top]);
      if (!top) await run('qemu-img', ['check', '-q', image]);
    }
}

// One stack for the file: each test starts the host agent with the holds it needs.
const file = stackPerFile({ driver: 'libvirt' });

describe('a shut-off domain', () => {
  test('persistent: both kinds merged offline, the active disk redefined to its base, the domain starts on the merged chains', async () => {
    const vm = await shutOffVm(file.stack, 'off-persist', true, 'p-');
    const request = mergeRequest(vm, 'snap-lv-off-persist', ['intermediate', 'active']);
    const result = await (await startMerge(file.stack, request)).result();
    expect(result.disks.map((d) => [d.mode, d.commitKind, d.activeVolumeId])).toEqual([
      ['offline', 'intermediate', 'p-d0v2'],
      ['offline', 'active', 'p-d1v1'],
    ]);
    expect(await inactiveSource(vm)).toEqual([
      volumePath(file.stack.storageRoot, 'p-disk0', 'p-d0v2'),
      volumePath(file.stack.storageRoot, 'p-disk1', 'p-d1v1'),
    ]);
    await startLibvirtLabVm(vm);
    await expectRunsMerged(file.stack, vm, request);
  });

  test('transient, gone once shut off: merged offline, the result names the volumes for the caller', async () => {
    const vm = await shutOffVm(file.stack, 'off-transient', false, 't-');
    const request = mergeRequest(vm, 'snap-lv-off-transient', ['intermediate', 'active']);
    const result = await (await startMerge(file.stack, request)).result();
    expect(result.disks.map((d) => [d.mode, d.activeVolumeId])).toEqual([
      ['offline', 't-d0v2'],
      ['offline', 't-d1v1'],
    ]);
    for (const d of vm.disks)
      for (const v of d.volumeIds) {
        const image = volumePath(file.stack.storageRoot, d.diskId, v);
        if (existsSync(image)) await run('qemu-img', ['check', '-q', image]);
      }
    expect(existsSync(volumePath(file.stack.storageRoot, 't-disk0', 't-d0v1'))).toBe(false);
    expect(existsSync(volumePath(file.stack.storageRoot, 't-disk1', 't-d1v2'))).toBe(false);
  });

  test('a start attempted during the commit fails on the image locks; the merge completes', async () => {
    const vm = await shutOffVm(file.stack, 'off-start', true, 's-');
    const request = mergeRequest(vm, 'snap-lv-off-start', ['active'], { bandwidthBytesPerSec: 1024 * 1024 });
    const handle = await startMerge(file.stack, request);
    // The commit frozen while the start is tried: libvirt's start of a domain can take longer than
    // the commit on a loaded machine, and would then find no lock to fail on.
    const commit = await until(
      () => lockedImageCommitPid(volumePath(file.stack.storageRoot, 's-disk0', 's-d0v2')),
      60_000,
      20,
    );
    process.kill(commit, 'SIGSTOP');
    try {
      await expect(startLibvirtLabVm(vm)).rejects.toThrow(/lock/);
    } finally {
      process.kill(commit, 'SIGCONT');
    }
    const result = await handle.result();
    expect(result.disks[0].activeVolumeId).toBe('s-d0v1');
    await startLibvirtLabVm(vm);
    await expectRunsMerged(file.stack, vm, request);
  });
});

describe('a persistent domain started between the commit and the redefine', () => {
  test('the redefine refuses (VmStarted), the definition is kept, the domain runs on; a new merge runs live', async () => {
    await file.stack.restartHost(['after:offlineCommit']);
    const vm = await shutOffVm(file.stack, 'off-between', true, 'b-');
    const request = mergeRequest(vm, 'snap-lv-off-between', ['active']);
    const handle = await startMerge(file.stack, request);
    await file.stack.reached('after:offlineCommit');
    await startLibvirtLabVm(vm);
    file.stack.release('after:offlineCommit');
    const err: unknown = await handle.result().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(String((err as WorkflowFailedError).cause?.message)).toMatch(/started during the offline merge/);
    expect((await inactiveSource(vm))[0]).toBe(volumePath(file.stack.storageRoot, 'b-disk0', 'b-d0v2'));
    expect(existsSync(volumePath(file.stack.storageRoot, 'b-disk0', 'b-d0v2'))).toBe(true);

    const again = await (
      await startMerge(file.stack, { ...request, snapshotId: 'snap-lv-off-between-again' })
    ).result();
    expect(again.disks[0]).toMatchObject({ outcome: 'merged', mode: 'live', activeVolumeId: 'b-d0v1' });
    await expectRunsMerged(file.stack, vm, request);
  });
});

describe('a persistent domain destroyed mid-merge', () => {
  test('right after the pivot: merged, the base named, the stale top deleted uncommitted', async () => {
    await file.stack.restartHost(['before:deleteVolume']);
    const vm = await shutOffVm(file.stack, 'pivot-destroy', true, 'q-');
    await startLibvirtLabVm(vm);
    const request = mergeRequest(vm, 'snap-lv-pivot-destroy', ['active']);
    const handle = await startMerge(file.stack, request);
    await file.stack.reached('before:deleteVolume');
    await shutOffLibvirtLabVm(vm);
    await file.stack.host!.kill();
    await file.stack.startHost();
    const result = await handle.result();
    expect(result.disks.map((d) => [d.outcome, d.mode, d.commitKind, d.activeVolumeId, d.stoppedMidMerge])).toEqual([
      ['merged', 'offline', 'active', 'q-d0v1', { topStale: true }],
    ]);
    expect((await inactiveSource(vm))[0]).toBe(volumePath(file.stack.storageRoot, 'q-disk0', 'q-d0v1'));
    await startLibvirtLabVm(vm);
    await expectRunsMerged(file.stack, vm, request);
  });

  test('both jobs running: finished offline, the active disk redefined to its base, the domain starts on the merged chains', async () => {
    const vm = await createLibvirtLabVm({
      storageRoot: file.stack.storageRoot,
      vmId: domainName('mid-destroy'),
      disks: 2,
      volumes: 3,
      layerDataMiB: 4,
      idPrefix: 'm-',
      sizeMiB: 28,
      persistent: true,
    });
    vms.push(vm);
    const request = mergeRequest(vm, 'snap-lv-mid-destroy', ['intermediate', 'active'], {
      bandwidthBytesPerSec: 1024 * 1024,
    });
    const handle = await startMerge(file.stack, request);
    await untilJobRuns(vm, 'vda');
    await untilJobRuns(vm, 'vdb');
    await shutOffLibvirtLabVm(vm);
    const result = await handle.result();
    expect(result.disks.map((d) => [d.outcome, d.mode, d.commitKind, d.activeVolumeId, d.stoppedMidMerge])).toEqual([
      ['merged', 'offline', 'intermediate', 'm-d0v2', { topStale: false }],
      ['merged', 'offline', 'active', 'm-d1v1', { topStale: false }],
    ]);
    expect(await inactiveSource(vm)).toEqual([
      volumePath(file.stack.storageRoot, 'm-disk0', 'm-d0v2'),
      volumePath(file.stack.storageRoot, 'm-disk1', 'm-d1v1'),
    ]);
    await startLibvirtLabVm(vm);
    await expectRunsMerged(file.stack, vm, request);
  });
});

import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { LibvirtLabVm } from '../../lab/libvirt/domain';
import { destroyLibvirtLabVm } from '../../lab/libvirt/domain';
import { stopAndCheckData, verifyLibvirtChains } from '../../lab/libvirt/verify';
import { volumePath } from '../../src/domain/layout';
import { LibvirtDriver } from '../../src/drivers/libvirt/libvirt-driver';
import { mergeRequest } from '../harness/merge-request';
import { FaultStack } from '../harness/process-stack';
import { MiB, recordRecovery, startMerge } from '../harness/scenario';
import { expectLibvirtMerged, libvirtVm, untilJobRuns } from './scenario';

/**
 * Merges of libvirt domains through the whole product (dev server, engine and a host agent with
 * `--driver libvirt`, one process each), beside libvirt's own `virsh blockcommit`, and the fault
 * rows that need no restart of libvirtd (those are in daemon.test.ts).
 */

jest.setTimeout(240_000);
const run = promisify(execFile);

let stack: FaultStack;
const vms: LibvirtLabVm[] = [];
beforeAll(async () => {
  stack = await new FaultStack({ driver: 'libvirt' }).start({ holds: ['before:completeJob'] });
  // Pivots go on at once unless a test holds them (it removes the release).
  stack.release('before:completeJob');
});
afterAll(async () => {
  for (const vm of vms) await destroyLibvirtLabVm(vm).catch(() => undefined);
  await stack?.close();
});

async function vm(name: string, disks: number, layerDataMiB = 1, prefix = ''): Promise<LibvirtLabVm> {
  const v = await libvirtVm(stack, name, disks, layerDataMiB, prefix);
  vms.push(v);
  return v;
}

test('side by side with virsh blockcommit --wait: the same chains in dumpxml, the same data', async () => {
  const ours = await vm('sbs-ours', 2, 1, 'o-');
  const theirs = await vm('sbs-virsh', 2, 1, 'v-');
  const request = mergeRequest(ours, 'snap-lv-sbs', ['intermediate', 'active']);
  const result = await startMerge(stack, request).then((h) => h.result());
  expect(result.disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);

  // libvirt's own tool on the twin: vda's layer 1 into 0 (relative name kept), vdb's active layer pivoted.
  const virsh = (...args: string[]) => run('virsh', ['-q', '-c', theirs.uri, ...args], { timeout: 120_000 });
  const reader = new LibvirtDriver({ uri: theirs.uri, runDir: stack.runDir });
  const [vda, vdb] = await reader.readAllChains(theirs.vmId).finally(() => reader.close());
  const [top0, base0] = [vda.volumes[1].nodeName, vda.volumes[2].nodeName];
  await virsh('blockcommit', theirs.vmId, 'vda', '--top', top0, '--base', base0, '--keep-relative', '--wait');
  const [top1, base1] = [vdb.volumes[0].nodeName, vdb.volumes[1].nodeName];
  await virsh('blockcommit', theirs.vmId, 'vdb', '--active', '--pivot', '--wait', '--top', top1, '--base', base1);

  const ourChains = await verifyLibvirtChains(ours, stack.runDir);
  const theirChains = await verifyLibvirtChains(theirs, stack.runDir);
  const strip = (ids: string[], prefix: string) => ids.map((id) => id.slice(prefix.length));
  expect(ourChains.map((d) => strip(d.libvirtChain, 'o-'))).toEqual([
    ['d0v2', 'd0v0'],
    ['d1v1', 'd1v0'],
  ]);
  expect(ourChains.map((d) => strip(d.libvirtChain, 'o-'))).toEqual(
    theirChains.map((d) => strip(d.libvirtChain, 'v-')),
  );
  expect(ourChains.every((d) => d.chainOk) && theirChains.every((d) => d.chainOk)).toBe(true);

  // The same data: every region's pattern, and the two disks' contents byte for byte.
  expect((await stopAndCheckData(ours, ourChains)).filter((r) => !r.ok)).toEqual([]);
  expect((await stopAndCheckData(theirs, theirChains)).filter((r) => !r.ok)).toEqual([]);
  for (const i of [0, 1]) {
    const r = await run('qemu-img', ['compare', '-U', ourChains[i].activePath, theirChains[i].activePath]);
    expect(r.stdout).toMatch(/Images are identical/);
  }
});

test('L1 host agent killed mid-job: the restarted agent adopts both jobs and the merge completes', async () => {
  const v = await vm('hostkill', 2, 4, 'h-');
  const request = mergeRequest(v, 'snap-lv-hostkill', ['intermediate', 'active'], { bandwidthBytesPerSec: MiB });
  const handle = await startMerge(stack, request);
  await untilJobRuns(v, 'vda');
  await untilJobRuns(v, 'vdb');
  await stack.host!.kill();
  const restarted = Date.now();
  await stack.startHost(['before:completeJob']);
  const result = await handle.result();
  recordRecovery('L1 libvirt: host agent killed mid-job', Date.now() - restarted);
  expect(result.disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);
  await expectLibvirtMerged(stack, v, request);
});

test('L3 cancel in ready: no pivot, the chain as it was, nothing deleted', async () => {
  const v = await vm('cancel', 1, 1, 'c-');
  const before = await verifyLibvirtChains(v, stack.runDir);
  stack.unrelease('before:completeJob');
  try {
    const handle = await startMerge(stack, mergeRequest(v, 'snap-lv-cancel', ['active']));
    await stack.reached('before:completeJob');
    const xml = await run('virsh', ['-q', '-c', v.uri, 'dumpxml', v.vmId]);
    expect(xml.stdout).toMatch(/<mirror [^>]*ready='yes'/);
    await handle.cancel();
    await handle.result().catch(() => undefined);
    expect((await handle.describe()).status.name).toBe('CANCELLED');
  } finally {
    stack.release('before:completeJob');
  }
  const after = await verifyLibvirtChains(v, stack.runDir);
  expect(after.map((d) => d.libvirtChain)).toEqual(before.map((d) => d.libvirtChain));
  const xml = await run('virsh', ['-q', '-c', v.uri, 'dumpxml', v.vmId]);
  expect(xml.stdout).not.toMatch(/<mirror/);
  expect((await stopAndCheckData(v, after)).filter((r) => !r.ok)).toEqual([]);
});

test('L4 block job failure (the base file system fills up mid-job): the disk fails, chain and volumes kept', async () => {
  // The disk's image dir on a small tmpfs of its own: room for the chain and the space check's
  // margin, filled up once the job runs.
  const dir = path.join(stack.storageRoot, 'images', 'f-disk0');
  mkdirSync(dir, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', 'size=100m', 'tmpfs', dir]);
  try {
    const v = await vm('fail', 1, 4, 'f-');
    const before = await verifyLibvirtChains(v, stack.runDir);
    const request = mergeRequest(v, 'snap-lv-fail', ['intermediate'], { bandwidthBytesPerSec: MiB });
    const handle = await startMerge(stack, request);
    await untilJobRuns(v, 'vda');
    await run('dd', ['if=/dev/zero', `of=${path.join(dir, 'filler')}`, 'bs=1M']).catch(() => undefined);
    const err = await handle.result().then(
      () => undefined,
      (e: unknown) => e,
    );
    const cause = (err as { cause?: { type?: string; message?: string } }).cause;
    expect(cause?.type).toBe('DiskMergeFailed');
    expect(cause?.message).toMatch(
      /block job lm\.f-disk0\.f-d0v1 failed .*libvirt reported it failed.*top volume f-d0v1 kept/,
    );
    expect((await handle.describe()).status.name).toBe('FAILED');
    rmSync(path.join(dir, 'filler'));
    const after = await verifyLibvirtChains(v, stack.runDir);
    expect(after.map((d) => d.libvirtChain)).toEqual(before.map((d) => d.libvirtChain));
    for (const id of v.disks[0].volumeIds) expect(existsSync(volumePath(stack.storageRoot, 'f-disk0', id))).toBe(true);
    expect((await stopAndCheckData(v, after)).filter((r) => !r.ok)).toEqual([]);
  } finally {
    for (const v of vms) await destroyLibvirtLabVm(v).catch(() => undefined);
    await run('umount', [dir]);
  }
});

import { destroyLibvirtLabVm, type LibvirtLabVm } from '../../lab/libvirt/domain';
import { mergeRequest } from '../harness/merge-request';
import { FaultStack } from '../harness/process-stack';
import { MiB, recordRecovery, startMerge } from '../harness/scenario';
import { expectLibvirtMerged, killLibvirtd, libvirtVm, startLibvirtd, untilJobRuns } from './scenario';

/**
 * L2: libvirtd killed (SIGKILL, by its pid) and started again under a merge. QEMU runs on; the
 * host agent's virsh calls fail while libvirtd is away and its event listener dies (the wait's
 * retries and polling carry on); once back, libvirt shows a running or ready job again, or has
 * completed one that finished meanwhile, and the chain it reports decides. libvirtd is left running.
 */

jest.setTimeout(240_000);

let stack: FaultStack;
const vms: LibvirtLabVm[] = [];
beforeAll(async () => {
  stack = await new FaultStack({ driver: 'libvirt' }).start({ holds: ['before:completeJob'] });
});
afterAll(async () => {
  // Whatever happened, libvirtd runs again for whoever comes next.
  await startLibvirtd();
  for (const vm of vms) await destroyLibvirtLabVm(vm).catch(() => undefined);
  await stack?.close();
});

test('L2a libvirtd killed and restarted while both jobs run: the merge completes', async () => {
  stack.release('before:completeJob');
  const vm = await libvirtVm(stack, 'lvd-run', 2, 4, 'r-');
  vms.push(vm);
  const request = mergeRequest(vm, 'snap-lvd-run', ['intermediate', 'active'], { bandwidthBytesPerSec: MiB });
  const handle = await startMerge(stack, request);
  await untilJobRuns(vm, 'vda');
  await untilJobRuns(vm, 'vdb');
  await killLibvirtd();
  await new Promise((r) => setTimeout(r, 1000));
  const restarted = Date.now();
  await startLibvirtd();
  const result = await handle.result();
  recordRecovery('L2a libvirt: libvirtd killed and restarted mid-job', Date.now() - restarted);
  expect(result.disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);
  await expectLibvirtMerged(stack, vm, request);
});

test('L2b libvirtd killed and restarted while the active commit is ready: the pivot after it completes the merge', async () => {
  stack.unrelease('before:completeJob');
  const vm = await libvirtVm(stack, 'lvd-ready', 1, 1, 'y-');
  vms.push(vm);
  const request = mergeRequest(vm, 'snap-lvd-ready', ['active']);
  const handle = await startMerge(stack, request);
  await stack.reached('before:completeJob');
  await killLibvirtd();
  const restarted = Date.now();
  await startLibvirtd();
  stack.release('before:completeJob');
  const result = await handle.result();
  recordRecovery('L2b libvirt: libvirtd killed and restarted in ready', Date.now() - restarted);
  expect(result.disks.map((d) => d.outcome)).toEqual(['merged']);
  await expectLibvirtMerged(stack, vm, request);
});

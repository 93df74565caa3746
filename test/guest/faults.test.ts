/**
 * Failure semantics with a writing guest: the stack as processes (test/harness/process-stack.ts), one stack
 * for the file, a process of it killed (or the merge cancelled) while the guest writes through the
 * merge (QEMU killed or stopped: test/guest/stopped.test.ts). Every acknowledged write must be on
 * the disks afterwards.
 */
import { ensureGuestArtifacts } from '../../lab/guest';
import { type LabVm, runningLabVmPid, verifyLabVm } from '../../lab/vm';
import { watchJobs } from '../harness/jobs';
import { FaultStack } from '../harness/process-stack';
import { expectMerged, expectOnlyTopsDeleted, mergeRequest, startMerge } from '../harness/scenario';
import { until } from '../harness/until';
import { acksPerDisk, BANDWIDTH, GuestVms, stopAndCheck, waitForWrites } from './guest-vm';

jest.setTimeout(180_000);

let stack: FaultStack;
const vms = new GuestVms(() => stack);

beforeAll(async () => {
  await ensureGuestArtifacts();
  stack = await new FaultStack().start();
}, 300_000);

afterEach(async () => {
  await vms.cleanup();
  if (stack?.host) await stack.restartHost();
});
afterAll(async () => stack?.close());

type Victim = 'engine' | 'host' | 'server';

test.each([
  ['host agent killed while the jobs run', 'host'],
  ['engine killed while the jobs run', 'engine'],
  ['Temporal server killed and restarted while the jobs run', 'server'],
] as const)('%s: merged, one job per disk, no acknowledged write lost', async (scenario, victim: Victim) => {
  const vm: LabVm = await vms.create(`gf-${victim}`);
  await waitForWrites(vm);
  const request = mergeRequest(vm, `snap-gf-${victim}`, ['intermediate', 'active'], {
    bandwidthBytesPerSec: BANDWIDTH,
  });
  const jobs = await watchJobs(stack.runDir, vm.vmId);
  const before = await acksPerDisk(vm);
  const handle = await startMerge(stack, request);
  await until(async () => (await jobs.running()) === 2);
  if (victim === 'engine') await stack.engine!.kill();
  if (victim === 'host') await stack.host!.kill();
  if (victim === 'server') await stack.server.kill();
  await new Promise((r) => setTimeout(r, 1000));
  if (victim === 'engine') await stack.startEngine();
  if (victim === 'host') await stack.startHost();
  if (victim === 'server') await stack.startServer();
  const result = await handle.result();
  const during = (await acksPerDisk(vm)).map((n, i) => n - before[i]);
  await jobs.close();
  expect((await handle.describe()).status.name).toBe('COMPLETED');
  expect(result.disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);
  expect(jobs.created.sort()).toEqual(['lm.disk0.d0v1', 'lm.disk1.d1v2']);
  await expectMerged(stack, vm, request);
  expect(await runningLabVmPid(stack.runDir, vm.vmId)).toBe(vm.pid);
  const report = await stopAndCheck(`guest: ${scenario}`, stack.runDir, vm, during);
  expect(report.disks.map((d) => d.chain)).toEqual([
    ['d0v2', 'd0v0'],
    ['d1v1', 'd1v0'],
  ]);
});

test('merge cancelled while the active commit is ready: no pivot, top kept, no acknowledged write lost', async () => {
  await stack.restartHost(['before:completeJob']);
  const vm = await vms.create('gf-cancel');
  await waitForWrites(vm);
  const chainsBefore = (await verifyLabVm(stack.runDir, vm.vmId)).disks.map((d) => d.chain);
  const request = mergeRequest(vm, 'snap-gf-cancel', ['active'], { bandwidthBytesPerSec: BANDWIDTH });
  const jobs = await watchJobs(stack.runDir, vm.vmId);
  const before = await acksPerDisk(vm);
  const handle = await startMerge(stack, request);
  await stack.reached('before:completeJob');
  expect((await jobs.list()).map((j) => j.status)).toEqual(['ready']);
  await handle.cancel();
  await handle.result().catch(() => undefined);
  const during = (await acksPerDisk(vm)).map((n, i) => n - before[i]);
  expect(await jobs.list()).toEqual([]);
  await jobs.close();
  expect((await handle.describe()).status.name).toBe('CANCELLED');
  const verified = await verifyLabVm(stack.runDir, vm.vmId);
  expect(verified.ok).toBe(true);
  expect(verified.disks.map((d) => d.chain)).toEqual(chainsBefore);
  expectOnlyTopsDeleted(stack, vm, []);
  // No pivot: the guest wrote to the top all along, and the check reads the chain from there.
  const report = await stopAndCheck('guest: cancelled in ready', stack.runDir, vm, during);
  expect(report.disks.map((d) => d.chain)).toEqual(chainsBefore);
});

import { destroyLabVm } from '../../src/lab/vm';
import { FaultStack } from './stack';
import { until, watchJobs } from './jobs';
import { expectMerged, labVm, MiB, mergeRequest, recordRecovery, startMerge } from './scenario';

/**
 * Restarts anywhere in the middle: each scenario runs its own dev server, engine worker and host
 * agent processes and a real VM with data, kills one of them like a crash, starts it again, and
 * checks the merge ends right: tops deleted exactly when out of the chain, data intact.
 */

jest.setTimeout(180_000);

test('1. engine worker killed while the disks wait on their block jobs: the merge completes, one job per disk', async () => {
  const stack = await new FaultStack().start();
  try {
    const vm = await labVm(stack, 'vm-f1', 2, 3, 8);
    const request = mergeRequest(vm, 'snap-f1', ['intermediate', 'active'], { bandwidthBytesPerSec: 2 * MiB });
    const jobs = await watchJobs(stack.runDir, vm.vmId);
    const handle = await startMerge(stack, request);
    await until(async () => (await jobs.running()) === 2);
    await stack.engine!.kill();
    await new Promise((r) => setTimeout(r, 1000));
    const restarted = Date.now();
    await stack.startEngine();
    const result = await handle.result();
    recordRecovery('1 engine killed mid-job', Date.now() - restarted);
    await jobs.qmp.close();
    expect(result.disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);
    expect(jobs.created.sort()).toEqual(['lm.disk0.d0v1', 'lm.disk1.d1v2']);
    await expectMerged(stack, vm, request);
    await destroyLabVm(stack.runDir, vm.vmId);
  } finally {
    await stack.close();
  }
});

test('2. host agent killed mid-job: the job goes on in QEMU, the restarted agent resumes it', async () => {
  const stack = await new FaultStack().start();
  try {
    const vm = await labVm(stack, 'vm-f2', 2, 3, 8);
    const request = mergeRequest(vm, 'snap-f2', ['intermediate', 'active'], { bandwidthBytesPerSec: 2 * MiB });
    const jobs = await watchJobs(stack.runDir, vm.vmId);
    const handle = await startMerge(stack, request);
    await until(async () => (await jobs.running()) === 2);
    await stack.host!.kill();
    // The agent is gone; QEMU's jobs are not.
    expect(await jobs.running()).toBe(2);
    await new Promise((r) => setTimeout(r, 1000));
    const restarted = Date.now();
    await stack.startHost();
    const result = await handle.result();
    recordRecovery('2 host agent killed mid-job', Date.now() - restarted);
    await jobs.qmp.close();
    expect(result.disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);
    expect(jobs.created.sort()).toEqual(['lm.disk0.d0v1', 'lm.disk1.d1v2']);
    await expectMerged(stack, vm, request);
    await destroyLabVm(stack.runDir, vm.vmId);
  } finally {
    await stack.close();
  }
});

test('3. host agent killed after the job ended and before the chain check: the chain still decides', async () => {
  const stack = await new FaultStack().start({ holds: ['before:verifyChain'] });
  try {
    const vm = await labVm(stack, 'vm-f3', 1, 3, 4);
    const request = mergeRequest(vm, 'snap-f3', ['intermediate']);
    const handle = await startMerge(stack, request);
    await stack.reached('before:verifyChain');
    await stack.host!.kill();
    const restarted = Date.now();
    await stack.startHost();
    const result = await handle.result();
    recordRecovery('3 host agent killed before the chain check', Date.now() - restarted);
    expect(result.disks[0]).toMatchObject({ outcome: 'merged', chainAfter: ['d0v2', 'd0v0'] });
    await expectMerged(stack, vm, request);
    await destroyLabVm(stack.runDir, vm.vmId);
  } finally {
    await stack.close();
  }
});

test('4. Temporal server killed and restarted on the same SQLite file mid-merge: the merge completes', async () => {
  const stack = await new FaultStack().start();
  try {
    const vm = await labVm(stack, 'vm-f4', 2, 3, 8);
    const request = mergeRequest(vm, 'snap-f4', ['intermediate', 'active'], { bandwidthBytesPerSec: 2 * MiB });
    const jobs = await watchJobs(stack.runDir, vm.vmId);
    const handle = await startMerge(stack, request);
    await until(async () => (await jobs.running()) === 2);
    await stack.server.kill();
    await new Promise((r) => setTimeout(r, 1000));
    const restarted = Date.now();
    await stack.startServer();
    const result = await handle.result();
    recordRecovery('4 server killed and restarted mid-merge', Date.now() - restarted);
    await jobs.qmp.close();
    expect(result.disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);
    expect(jobs.created.sort()).toEqual(['lm.disk0.d0v1', 'lm.disk1.d1v2']);
    await expectMerged(stack, vm, request);
    await destroyLabVm(stack.runDir, vm.vmId);
  } finally {
    await stack.close();
  }
});

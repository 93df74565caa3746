import { stackPerFile } from '../harness/file-stack';
import { watchJobs } from '../harness/jobs';
import { expectMerged, mergeRequest, MiB, recordRecovery, startMerge } from '../harness/scenario';
import { until } from '../harness/until';

/**
 * Restarts anywhere in the middle: the file's dev server, engine worker and host agent processes
 * and a real VM with data for each scenario, which kills one of the processes like a crash, starts
 * it again, and checks the merge ends right: tops deleted exactly when out of the chain, data intact.
 */

jest.setTimeout(180_000);

// One stack for the file: each test starts the host agent with its holds.
const file = stackPerFile();

type Victim = 'engine' | 'host' | 'server';

/** Kills one process while both disks' jobs run, starts it again, and expects the merge to end right. */
async function killMidJob(victim: Victim, scenario: string): Promise<void> {
  const vm = await file.labVm(`vm-f-${victim}`, 2, 3, 8);
  const request = mergeRequest(vm, `snap-f-${victim}`, ['intermediate', 'active'], { bandwidthBytesPerSec: 2 * MiB });
  const jobs = await watchJobs(file.stack.runDir, vm.vmId);
  const handle = await startMerge(file.stack, request);
  await until(async () => (await jobs.running()) === 2);
  if (victim === 'engine') await file.stack.engine!.kill();
  if (victim === 'host') await file.stack.host!.kill();
  if (victim === 'server') await file.stack.server.kill();
  // The process is gone; QEMU's jobs are not.
  expect(await jobs.running()).toBe(2);
  await new Promise((r) => setTimeout(r, 1000));
  const restarted = Date.now();
  if (victim === 'engine') await file.stack.startEngine();
  if (victim === 'host') await file.stack.startHost();
  if (victim === 'server') await file.stack.startServer();
  const result = await handle.result();
  recordRecovery(scenario, Date.now() - restarted);
  await jobs.close();
  expect(result.disks.map((d) => d.outcome)).toEqual(['merged', 'merged']);
  // One job per disk: the retried steps adopted the running jobs.
  expect(jobs.created.sort()).toEqual(['lm.disk0.d0v1', 'lm.disk1.d1v2']);
  await expectMerged(file.stack, vm, request);
}

test.each([
  ['1 engine killed mid-job', 'engine'],
  ['2 host agent killed mid-job', 'host'],
  ['4 server killed and restarted mid-merge', 'server'],
] as const)('%s: the merge completes, QEMU ran one job per disk', (scenario, victim) => killMidJob(victim, scenario));

test('3. host agent killed after the job ended and before the chain check: the chain still decides', async () => {
  await file.stack.restartHost(['before:verifyChain']);
  const vm = await file.labVm('vm-f3', 1, 3, 4);
  const request = mergeRequest(vm, 'snap-f3', ['intermediate']);
  const handle = await startMerge(file.stack, request);
  await file.stack.reached('before:verifyChain');
  await file.stack.host!.kill();
  const restarted = Date.now();
  await file.stack.startHost();
  const result = await handle.result();
  recordRecovery('3 host agent killed before the chain check', Date.now() - restarted);
  expect(result.disks[0]).toMatchObject({ outcome: 'merged', chainAfter: ['d0v2', 'd0v0'] });
  await expectMerged(file.stack, vm, request);
});

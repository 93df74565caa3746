import { verifyLabVm } from '../../lab/vm';
import { stackPerFile } from '../harness/file-stack';
import { watchJobs } from '../harness/jobs';
import { expectMerged, expectSpaceReclaimed, mergeRequest, recordRecovery, startMerge } from '../harness/scenario';

/**
 * 5. Kills during the pivot, the delete and the cleanup: the host agent stops right after the
 * step's effect (the pivot asked, the file renamed out of its name, the job dismissed) and is
 * killed there; the restarted agent repeats the step. No step is lost, and none done twice harms:
 * a second delete of a gone volume is a success, and nothing else is deleted. The space of a top
 * the killed agent had not yet unlinked is freed by the restarted one.
 */

jest.setTimeout(180_000);

// One stack for the file: each test starts the host agent with its holds.
const file = stackPerFile();

test.each([
  ['during the pivot', 'after:completeJob', 'active', 1],
  ['during the delete', 'after:deleteVolume', 'intermediate', 2],
  ['during the cleanup', 'after:cleanup', 'active', 3],
] as const)('5. host agent killed %s: the merge completes, only the top is deleted', async (name, point, kind, n) => {
  await file.stack.restartHost([point]);
  const vm = await file.labVm(`vm-f5-${n}`, 1, 3, 4, `s${n}-`);
  const request = mergeRequest(vm, `snap-f5-${point.replace(':', '-')}`, [kind]);
  const jobs = await watchJobs(file.stack.runDir, vm.vmId);
  const handle = await startMerge(file.stack, request);
  await file.stack.reached(point);
  await file.stack.host!.kill();
  const restarted = Date.now();
  await file.stack.startHost();
  const result = await handle.result();
  recordRecovery(`5 host agent killed ${name}`, Date.now() - restarted);
  expect(jobs.created).toHaveLength(1);
  await jobs.close();
  expect(result.disks[0]).toMatchObject({ outcome: 'merged', commitKind: kind });
  await expectMerged(file.stack, vm, request);
  await expectSpaceReclaimed(file.stack, request);
  expect((await verifyLabVm(file.stack.runDir, vm.vmId)).disks[0].chain).toHaveLength(2);
});

/**
 * The adaptive speed on a real guest: the guest writes 4 KiB records with O_DIRECT|O_DSYNC as fast
 * as it can to a disk opened with cache=none, and the active commit runs in the default (adaptive)
 * mode. The host agent reads the guest's latency from QEMU (`query-blockstats`) and sets the job's
 * speed; QEMU's own view of the job (`query-block-jobs` on the VM's second monitor) shows the speed
 * rising in the slow start and falling once the guest's latency passes its target. The merge
 * completes, every acknowledged write is on the merged disk, and the progress shows the speed and
 * the guest's latency against its target while the job runs.
 */
import { checkGuestWrites, ensureGuestArtifacts, waitForGuestAcks } from '../../lab/guest';
import { createLabVm, destroyLabVm, type LabVm, stopLabVm } from '../../lab/vm';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import { auxQmpSocketPath } from '../../src/domain/layout';
import type { DiskProgress } from '../../src/domain/progress';
import { QmpClient } from '../../src/drivers/qmp/client';
import { queryBlockJobsSchema } from '../../src/drivers/qmp/schemas';
import { readMergeProgress } from '../../src/progress/read-progress';
import { LiveMergeWorkflow } from '../../src/workflows';
import { startTestStack, type TestStack } from '../harness/in-process-stack';
import { mergeRequest } from '../harness/merge-request';

jest.setTimeout(240_000);

const MiB = 1024 * 1024;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
let stack: TestStack;
let vm: LabVm | undefined;

beforeAll(async () => {
  await ensureGuestArtifacts();
  stack = await startTestStack();
}, 300_000);
afterEach(async () => {
  if (vm) await destroyLabVm(stack.runDir, vm.vmId).catch(() => undefined);
  vm = undefined;
});
afterAll(async () => stack?.close());

test('an adaptive active commit under a writing guest: the speed rises, then falls; every write kept', async () => {
  // The job must outlast the slow start's climb past what the disk can copy beside the guest's
  // writes, and the wait's 5 s heartbeat throttle for its progress to show a tick. With 192 MiB
  // it ended at 273 or 410 MiB/s, before either; with 768 MiB it fell at 273 or 410 and ran 10 s or more.
  const layerDataMiB = 768;
  vm = await createLabVm({
    storageRoot: stack.storageRoot,
    runDir: stack.runDir,
    vmId: 'adaptive',
    disks: 1,
    volumes: 2,
    layerDataMiB,
    cache: 'none',
    sizeMiB: 3 * layerDataMiB + 64,
    guest: { rate: 0, regionMiB: 64 },
  });
  if (!vm.guest) throw new Error('no guest');
  await waitForGuestAcks(vm.guest.ackLog, 2000);

  // QEMU's view of the job's speed, every 100 ms, on the VM's second monitor.
  const qmp = await QmpClient.connect(auxQmpSocketPath(stack.runDir, vm.vmId));
  const speeds: number[] = [];
  const shown: DiskProgress[] = [];
  let merging = true;
  const watchQemu = (async () => {
    while (merging) {
      const jobs = await qmp.executeParsed('query-block-jobs', {}, queryBlockJobsSchema).catch(() => []);
      const speed = jobs[0]?.speed;
      if (speed !== undefined && speed !== speeds[speeds.length - 1]) speeds.push(speed);
      await sleep(100);
    }
  })();
  const request = mergeRequest(vm, 'snap-adaptive', ['active']);
  const watchProgress = (async () => {
    while (merging) {
      const p = await readMergeProgress(stack.temporal.client, 'snap-adaptive').catch(() => undefined);
      const d = p?.disks[0];
      if (d?.speed) shown.push(d);
      await sleep(500);
    }
  })();
  try {
    const handle = await stack.temporal.client.workflow.start(LiveMergeWorkflow, {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId: liveMergeWorkflowId('snap-adaptive'),
      args: [request],
    });
    const result = await handle.result();
    expect(result.disks[0]).toMatchObject({ outcome: 'merged', commitKind: 'active' });
  } finally {
    merging = false;
    await Promise.all([watchQemu, watchProgress]);
    await qmp.close();
  }
  console.log(`QEMU's job speeds, MiB/s: ${speeds.map((s) => (s / MiB).toFixed(0)).join(' ')}`);

  // The guest was busy when the job started: careful at first, doubled, then lowered.
  expect(speeds[0]).toBeGreaterThan(0);
  const peak = speeds.indexOf(Math.max(...speeds));
  expect(speeds.slice(peak + 1).some((s) => s > 0 && s < speeds[peak])).toBe(true);
  // The progress showed the adaptive speed and the guest's latency against its target.
  const withLatency = shown.find((d) => d.speed?.guestLatencyMs !== undefined);
  expect(withLatency?.speed).toMatchObject({ mode: 'adaptive' });
  expect(withLatency?.speed?.targetLatencyMs).toBeGreaterThan(0);

  expect(await stopLabVm(stack.runDir, vm.vmId)).toBe('guest-powered-off');
  const report = await checkGuestWrites(stack.runDir, vm.vmId);
  const d = report.disks[0];
  console.log(
    `${d.acknowledged} writes acknowledged, ${d.found}/${d.offsetsAcknowledged} offsets found, ${d.lost} lost`,
  );
  expect(report.problems).toEqual([]);
  expect(d.lost).toBe(0);
  expect(d.found).toBe(d.offsetsAcknowledged);
});

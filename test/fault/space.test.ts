import { execFile } from 'node:child_process';
import { mkdirSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';

import { createLabVm, type CreateLabVmOptions, destroyLabVm, type LabVm, verifyLabVm } from '../../lab/vm';
import { diskMergeWorkflowId } from '../../src/config/names';
import { volumePath } from '../../src/domain/layout';
import { blockJobEventDataSchema } from '../../src/drivers/qmp/schemas';
import { watchJobs } from '../harness/jobs';
import { FaultStack } from '../harness/process-stack';
import { expectMerged, expectOnlyTopsDeleted, mergeRequest, MiB, startMerge } from '../harness/scenario';
import { until } from '../harness/until';

/**
 * 11. Space and real I/O errors, on the real stack (dev server, engine worker, host agent as
 * processes) and real QEMU. The storage root of 11a and 11b is a file system of its own, a tmpfs
 * of a set size mounted by the test (we are root) and unmounted in `finally`.
 *
 * 11a. The base's file system has less room than the commit can add to the base plus the margin:
 *      the disk fails with InsufficientSpace before any job, naming needed and free bytes;
 *      nothing is touched; with room made (the tmpfs grown), the same merge finishes.
 * 11b. Room at the start, then something else fills the file system while a bandwidth-limited job
 *      runs: the job fails with QEMU's "No space left on device" (BlockJobFailed), the top is
 *      kept, the VM runs on with its chain as before; once the space is freed the merge finishes.
 * 11c. A real I/O error in the middle of the job, from QEMU's blkdebug under the base (the lab's
 *      `blkdebug` option: writes to the base fail with EIO after 4 of them): BlockJobFailed with
 *      "Input/output error", top kept, chain unchanged, VM running, job dismissed.
 */

jest.setTimeout(240_000);

const run = promisify(execFile);
/** Intermediate merges of d0v1 (two regions of 8 MiB) into d0v0: a job of 16 MiB of data. */
const LAYER_MIB = 8;

function vmOptions(stack: FaultStack, vmId: string, extra: Partial<CreateLabVmOptions> = {}): CreateLabVmOptions {
  return {
    storageRoot: stack.storageRoot,
    runDir: stack.runDir,
    vmId,
    disks: 1,
    volumes: 3,
    layerDataMiB: LAYER_MIB,
    sizeMiB: 48,
    guest: false, // paused, no guest OS: this test needs no writes
    ...extra,
  };
}

/** The stack with its storage root on a tmpfs of `sizeMiB`, unmounted (after the VM and agent stop) in `finally`. */
async function withSmallStorage(sizeMiB: number, fn: (stack: FaultStack) => Promise<void>): Promise<void> {
  const stack = new FaultStack();
  mkdirSync(stack.storageRoot, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0755`, 'tmpfs', stack.storageRoot]);
  try {
    await stack.start();
    await fn(stack);
  } finally {
    // QEMU and the host agent hold files on the mount: stop them first.
    for (const name of await fs.readdir(stack.runDir).catch(() => [])) await destroyLabVm(stack.runDir, name);
    await stack.host?.stop().catch(() => undefined);
    await unmount(stack.storageRoot);
    await stack.close();
  }
}

async function unmount(dir: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await run('umount', [dir]);
      return;
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/**
 * Takes all but about `leaveBytes` of `dir`'s file system while the job writes into it too: a
 * reserve is taken first, the rest written until the file system refuses, then the reserve is
 * freed. (A size read from statfs beforehand races the job's writes: fallocate then fails whole.)
 */
async function fillAllBut(dir: string, leaveBytes: number): Promise<string> {
  const reserve = path.join(dir, 'reserve');
  await run('fallocate', ['-l', String(leaveBytes), reserve]);
  const filler = path.join(dir, 'filler');
  const file = await fs.open(filler, 'w');
  try {
    for (const chunk of [Buffer.alloc(MiB), Buffer.alloc(4096)]) {
      for (let full = false; !full;) {
        full = await file.write(chunk).then(
          ({ bytesWritten }) => bytesWritten < chunk.length,
          (err: NodeJS.ErrnoException) => {
            if (err.code === 'ENOSPC') return true;
            throw err;
          },
        );
      }
    }
  } finally {
    await file.close();
  }
  await fs.rm(reserve);
  return filler;
}

/** The merge's failure: its message, and the failure type of each disk's child workflow. */
async function failureOf(
  stack: FaultStack,
  snapshotId: string,
  result: Promise<unknown>,
): Promise<{ message: string; diskType: string | undefined }> {
  const err = await result.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const childErr = await stack.client.workflow
    .getHandle(diskMergeWorkflowId(snapshotId, 'disk0'))
    .result()
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  expect(childErr).toBeInstanceOf(WorkflowFailedError);
  const cause = (childErr as WorkflowFailedError).cause;
  return {
    message: String((err as WorkflowFailedError).cause?.message),
    diskType: cause instanceof ApplicationFailure ? (cause.type ?? undefined) : undefined,
  };
}

/** The VM runs on: its QMP answers, QEMU runs no job of ours, its chain and data are as created. */
async function expectVmAsBefore(stack: FaultStack, vm: LabVm, jobs: Awaited<ReturnType<typeof watchJobs>>) {
  expect(await jobs.qmp.execute('query-status')).toMatchObject({ status: 'prelaunch' });
  expect(await jobs.list()).toEqual([]);
  await jobs.close();
  const report = await verifyLabVm(stack.runDir, vm.vmId);
  expect(report.ok).toBe(true);
  expect(report.disks[0].chain).toEqual(['d0v2', 'd0v1', 'd0v0']);
  expectOnlyTopsDeleted(stack, vm, []);
}

test('11a. too little room for what the commit can add to the base: InsufficientSpace, nothing touched; with room, the merge finishes', async () => {
  // Three volumes of about 16 MiB each leave about 47 MiB of 96: less than 16 MiB + the 64 MiB margin.
  await withSmallStorage(96, async (stack) => {
    const vm = await createLabVm(vmOptions(stack, 'vm-f11a'));
    const request = mergeRequest(vm, 'snap-f11a', ['intermediate'], { pollIntervalMs: 100 });
    const base = volumePath(stack.storageRoot, 'disk0', 'd0v0');
    const baseBefore = await fs.stat(base);
    const jobs = await watchJobs(stack.runDir, vm.vmId);
    const failed = await failureOf(stack, 'snap-f11a', (await startMerge(stack, request)).result());
    expect(failed.diskType).toBe('InsufficientSpace');
    const m =
      /needs (\d+) bytes \((\d+) the commit can add to the base, for (\d+) bytes allocated in the top, plus a margin of (\d+)\), (\d+) bytes free in (\S+); nothing was started; top volume d0v1 kept/.exec(
        failed.message,
      );
    expect(m).not.toBeNull();
    const [needed, growth, inTop, margin, free] = m!.slice(1, 6).map(Number);
    expect(inTop).toBe(2 * LAYER_MIB * MiB);
    expect(growth).toBeGreaterThanOrEqual(inTop);
    expect(needed).toBe(growth + margin);
    expect(free).toBeLessThan(needed);
    expect(m![6]).toBe(path.dirname(base));
    // No job was ever created, the base was not written.
    expect(jobs.created).toEqual([]);
    const baseAfter = await fs.stat(base);
    expect([baseAfter.size, baseAfter.mtimeMs]).toEqual([baseBefore.size, baseBefore.mtimeMs]);
    await expectVmAsBefore(stack, vm, jobs);

    // Room made (the tmpfs grown): the same merge finishes.
    await run('mount', ['-o', 'remount,size=256m', stack.storageRoot]);
    await (await startMerge(stack, request)).result();
    await expectMerged(stack, vm, request);
  });
});

test("11b. space runs out while the job runs: BlockJobFailed with QEMU's error, top kept, VM running; after space is freed the merge finishes", async () => {
  // About 49 MiB of 160 used: room for the 16 MiB commit and its margin at the start.
  await withSmallStorage(160, async (stack) => {
    const vm = await createLabVm(vmOptions(stack, 'vm-f11b'));
    const request = mergeRequest(vm, 'snap-f11b', ['intermediate'], {
      bandwidthBytesPerSec: 2 * MiB,
      pollIntervalMs: 100,
    });
    const jobs = await watchJobs(stack.runDir, vm.vmId);
    const handle = await startMerge(stack, request);
    await until(async () =>
      (await jobs.list()).some((j) => j.id === 'lm.disk0.d0v1' && j.status === 'running' && j['current-progress'] > 0),
    );
    // Something else takes all but 256 KiB of the file system while the job runs.
    const filler = await fillAllBut(stack.storageRoot, 256 * 1024);
    const failed = await failureOf(stack, 'snap-f11b', handle.result());
    expect(failed.diskType).toBe('BlockJobFailed');
    expect(failed.message).toMatch(
      /disk disk0: block job lm\.disk0\.d0v1 failed in QEMU: No space left on device; top volume d0v1 kept/,
    );
    await expectVmAsBefore(stack, vm, jobs);

    // Space freed: the same merge again finishes it.
    await fs.rm(filler);
    const result = await (await startMerge(stack, { ...request, options: { pollIntervalMs: 100 } })).result();
    expect(result.disks.map((d) => [d.diskId, d.outcome])).toEqual([['disk0', 'merged']]);
    await expectMerged(stack, vm, request);
  });
});

test('11c. a real I/O error (blkdebug under the base) in the middle of the job: BlockJobFailed, top kept, chain unchanged, VM running, job dismissed', async () => {
  const stack = await new FaultStack().start();
  try {
    const vm = await createLabVm(vmOptions(stack, 'vm-f11c', { blkdebug: { volumeId: 'd0v0', afterWrites: 4 } }));
    const request = mergeRequest(vm, 'snap-f11c', ['intermediate'], {
      bandwidthBytesPerSec: 2 * MiB,
      pollIntervalMs: 100,
    });
    const jobs = await watchJobs(stack.runDir, vm.vmId);
    const completed: unknown[] = [];
    jobs.qmp.onEvent((e) => {
      if (e.event === 'BLOCK_JOB_COMPLETED') completed.push(e.data);
    });
    const failed = await failureOf(stack, 'snap-f11c', (await startMerge(stack, request)).result());
    expect(failed.diskType).toBe('BlockJobFailed');
    expect(failed.message).toMatch(
      /disk disk0: block job lm\.disk0\.d0v1 failed in QEMU: Input\/output error; top volume d0v1 kept/,
    );
    // The job ran and copied part of the top before the error: it failed in the middle.
    expect(jobs.created).toEqual(['lm.disk0.d0v1']);
    expect(completed).toHaveLength(1);
    const end = blockJobEventDataSchema.parse(completed[0]);
    expect(end.error).toBe('Input/output error');
    expect(end.offset).toBeGreaterThan(0);
    expect(end.offset).toBeLessThan(end.len);
    await expectVmAsBefore(stack, vm, jobs);
  } finally {
    await destroyLabVm(stack.runDir, 'vm-f11c');
    await stack.close();
  }
});

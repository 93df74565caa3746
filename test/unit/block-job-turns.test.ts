/**
 * The block-job wait and cancel turn by turn, against a driver that plays a script of job states
 * (one per job-list read): when the wait pivots, what it asks QEMU how often, and what its
 * NotConverging failure says.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import type { HostDeps } from '../../src/activities';
import { createCancelBlockJob } from '../../src/activities/cancel-block-job';
import type { WaitStep } from '../../src/activities/inputs';
import { createWaitForBlockJob } from '../../src/activities/wait-for-block-job';
import type { Checkpoint } from '../../src/domain/checkpoint';
import type { BlockJob, HypervisorDriver, JobStatus } from '../../src/drivers/driver';
import { jobDeps, JobDriver } from '../harness/job-driver';

const MiB = 1024 * 1024;
const JOB = 'lm.d1.v2';
const job = (status: JobStatus, offset: number, len: number, error?: string): BlockJob => ({
  id: JOB,
  type: 'commit',
  status,
  offset,
  len,
  ...(error === undefined ? {} : { error }),
});

/** Lists the script's jobs one per read, then its last one for good; records what it is asked. */
class ScriptedDriver extends JobDriver {
  readonly calls: string[] = [];
  readonly signals: AbortSignal[] = [];
  listed: BlockJob | undefined;
  onList: () => void = () => undefined;

  constructor(public script: BlockJob[]) {
    super();
  }

  async listJobs(): Promise<BlockJob[]> {
    this.onList();
    this.listed = this.script.length > 1 ? this.script.shift() : this.script[0];
    return this.listed ? [this.listed] : [];
  }
  async completeJob(): Promise<void> {
    this.calls.push(`completeJob at ${this.listed?.offset}/${this.listed?.len}`);
    this.script = [job('concluded', this.listed?.len ?? 0, this.listed?.len ?? 0)];
  }
  async cancelJob(): Promise<void> {
    this.calls.push('cancelJob');
  }
  async setSpeed(_vm: string, _job: string, speed: number): Promise<void> {
    this.calls.push(`setSpeed ${speed}`);
  }
  async nextJobChange(_vm: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (signal) this.signals.push(signal);
    await new Promise((r) => setTimeout(r, Math.min(timeoutMs, 5)));
  }
}

const roots: string[] = [];
afterAll(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});
const deps = (driver: HypervisorDriver): HostDeps => {
  const d = jobDeps(driver);
  roots.push(d.storageRoot);
  return d;
};
/** The pivot record of the job's top (v2 of d1), or undefined. */
const recordOf = (d: HostDeps): { requestedAt: string; confirmedAt?: string } | undefined => {
  const file = path.join(d.storageRoot, 'images', 'd1', '.v2.pivot.json');
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as { requestedAt: string }) : undefined;
};
const waitIn = (policy: 'lift' | 'fail' | 'report' = 'lift'): WaitStep => ({
  vmId: 'vm1',
  diskId: 'd1',
  jobId: JOB,
  pollIntervalMs: 10,
  commitKind: 'active',
  convergence: { windowSeconds: 1, policy, graceSeconds: 0 },
});
const env = (heartbeatDetails?: Checkpoint): MockActivityEnvironment =>
  new MockActivityEnvironment(heartbeatDetails ? { heartbeatDetails } : {}, { logger: new DefaultLogger('ERROR') });

describe('waitForBlockJob', () => {
  test('a ready job with bytes still to copy is not pivoted yet: the pivot waits for offset === len', async () => {
    const driver = new ScriptedDriver([
      job('ready', 10 * MiB, 20 * MiB),
      job('ready', 15 * MiB, 20 * MiB),
      job('ready', 20 * MiB, 20 * MiB),
    ]);
    await expect(env().run(createWaitForBlockJob(deps(driver)), waitIn())).resolves.toMatchObject({
      outcome: 'concluded',
      pivotRequested: true,
    });
    expect(driver.calls).toEqual([`completeJob at ${20 * MiB}/${20 * MiB}`]);
  });

  test('the pivot is recorded on the host before it is asked for, and confirmed once the job concluded', async () => {
    const driver = new ScriptedDriver([job('ready', 20 * MiB, 20 * MiB)]);
    const d = deps(driver);
    const seen: Array<ReturnType<typeof recordOf>> = [];
    const complete = driver.completeJob.bind(driver);
    driver.completeJob = async () => {
      seen.push(recordOf(d));
      await complete();
    };
    await expect(env().run(createWaitForBlockJob(d), waitIn())).resolves.toMatchObject({ pivotRequested: true });
    expect(seen).toEqual([{ topVolumeId: 'v2', requestedAt: expect.any(String) }]);
    expect(recordOf(d)).toEqual({
      topVolumeId: 'v2',
      requestedAt: seen[0]!.requestedAt,
      confirmedAt: expect.any(String),
    });
  });

  test('a job that ends in error after the request leaves the record unconfirmed', async () => {
    const driver = new ScriptedDriver([job('ready', 20 * MiB, 20 * MiB)]);
    driver.completeJob = async () => {
      driver.calls.push('completeJob');
      driver.script = [job('concluded', 20 * MiB, 20 * MiB, 'Input/output error')];
    };
    const d = deps(driver);
    await expect(env().run(createWaitForBlockJob(d), waitIn())).resolves.toMatchObject({ error: 'Input/output error' });
    expect(recordOf(d)).toEqual({ topVolumeId: 'v2', requestedAt: expect.any(String) });
  });

  test('a commit without a pivot request concludes with no record', async () => {
    const driver = new ScriptedDriver([job('running', 0, 20 * MiB), job('concluded', 20 * MiB, 20 * MiB)]);
    const d = deps(driver);
    await expect(env().run(createWaitForBlockJob(d), waitIn())).resolves.toMatchObject({ pivotRequested: false });
    expect(recordOf(d)).toBeUndefined();
  });

  test('a resumed wait whose last attempt recorded the request asks again while the job is ready', async () => {
    const driver = new ScriptedDriver([job('ready', 20 * MiB, 20 * MiB)]);
    const d = deps(driver);
    const beat: Checkpoint = { status: 'ready', offset: 20 * MiB, len: 20 * MiB, pivotRequested: true };
    await expect(env(beat).run(createWaitForBlockJob(d), waitIn())).resolves.toMatchObject({ pivotRequested: true });
    expect(driver.calls).toEqual([`completeJob at ${20 * MiB}/${20 * MiB}`]);
    expect(recordOf(d)?.confirmedAt).toEqual(expect.any(String));
  });

  test("a resumed wait confirms the last attempt's recorded request even when its heartbeat did not carry it", async () => {
    const driver = new ScriptedDriver([job('concluded', 20 * MiB, 20 * MiB)]);
    const d = deps(driver);
    const file = path.join(d.storageRoot, 'images', 'd1', '.v2.pivot.json');
    writeFileSync(file, JSON.stringify({ topVolumeId: 'v2', requestedAt: '2026-12-07T09:00:00.000Z' }));
    const beat: Checkpoint = { status: 'ready', offset: 20 * MiB, len: 20 * MiB, pivotRequested: false };
    await expect(env(beat).run(createWaitForBlockJob(d), waitIn())).resolves.toMatchObject({ outcome: 'concluded' });
    expect(recordOf(d)).toEqual({
      topVolumeId: 'v2',
      requestedAt: '2026-12-07T09:00:00.000Z',
      confirmedAt: expect.any(String),
    });
  });

  test("a job id that is not the disk's is refused before a pivot, and nothing is recorded", async () => {
    const driver = new ScriptedDriver([{ ...job('ready', 20 * MiB, 20 * MiB), id: 'lm.d9.v2' }]);
    const d = deps(driver);
    await expect(env().run(createWaitForBlockJob(d), { ...waitIn(), jobId: 'lm.d9.v2' })).rejects.toMatchObject({
      type: 'InvalidMergeInput',
      message: 'invalid input: jobId: lm.d9.v2 is not a commit job of disk d1',
    });
    expect(driver.calls).toEqual([]);
  });

  test("each turn's wait for a job event is released when the turn ends", async () => {
    const driver = new ScriptedDriver([
      job('running', 0, 20 * MiB),
      job('running', 10 * MiB, 20 * MiB),
      job('concluded', 20 * MiB, 20 * MiB),
    ]);
    await env().run(createWaitForBlockJob(deps(driver)), waitIn());
    expect(driver.signals.length).toBeGreaterThanOrEqual(3);
    expect(driver.signals.every((s) => s.aborted)).toBe(true);
  });

  test('a merge cancelled while the job list is read: no pivot of the ready job', async () => {
    const driver = new ScriptedDriver([job('ready', 20 * MiB, 20 * MiB)]);
    const e = env();
    driver.onList = () => e.cancel();
    await expect(e.run(createWaitForBlockJob(deps(driver)), waitIn())).rejects.toBeInstanceOf(CancelledFailure);
    expect(driver.calls).toEqual([]);
  });

  test('lift: the speed limit is lifted once, even when the job still does not converge after it', async () => {
    const driver = new ScriptedDriver([job('running', 0, 64 * MiB)]); // no progress, ever
    const e = env();
    const result = e.run(createWaitForBlockJob(deps(driver)), waitIn('lift'));
    await new Promise((r) => setTimeout(r, 2000));
    e.cancel();
    await expect(result).rejects.toBeInstanceOf(CancelledFailure);
    expect(driver.calls).toEqual(['setSpeed 0']);
  });

  describe('the NotConverging failure names what was seen', () => {
    const resumed = (convergence?: Checkpoint['convergence']): Checkpoint => ({
      status: 'running',
      offset: 0,
      len: 64 * MiB,
      pivotRequested: false,
      cancelledNotConverging: true,
      ...(convergence ? { convergence } : {}),
    });

    test('the bytes left and since when no progress, from the heartbeat', async () => {
      const progressAt = Date.UTC(2026, 11, 1, 9, 30, 0);
      const driver = new ScriptedDriver([job('concluded', 0, 64 * MiB, 'Operation canceled')]);
      const checkpoint = resumed({
        converging: false,
        remainingBytes: 96.5 * MiB,
        progressRemaining: 96.5 * MiB,
        progressAt,
        detectedAt: progressAt + 1000,
      });
      await expect(env(checkpoint).run(createWaitForBlockJob(deps(driver)), waitIn('fail'))).rejects.toMatchObject({
        type: 'NotConverging',
        message: `block job ${JOB} did not converge: no progress for 1 s since 2026-12-01T09:30:00.000Z, 96.5 MiB left to copy (the guest dirties faster than the job copies); job cancelled without pivot, chain unchanged`,
      });
    });

    test('the job already dismissed, and no convergence record (a wait resumed from an older heartbeat): no figures', async () => {
      const driver = new ScriptedDriver([]);
      await expect(env(resumed()).run(createWaitForBlockJob(deps(driver)), waitIn('fail'))).rejects.toMatchObject({
        type: 'NotConverging',
        message: `block job ${JOB} did not converge: no progress for 1 s (the guest dirties faster than the job copies); job cancelled without pivot, chain unchanged`,
      });
    });
  });
});

describe('cancelBlockJob', () => {
  test('asks QEMU once, then waits for the job to conclude: a job aborting is not cancelled again', async () => {
    const driver = new ScriptedDriver([
      job('running', 0, 20 * MiB),
      job('aborting', 0, 20 * MiB),
      job('aborting', 0, 20 * MiB),
      job('concluded', 0, 20 * MiB, 'Operation canceled'),
    ]);
    await expect(
      env().run(createCancelBlockJob(deps(driver)), { vmId: 'vm1', diskId: 'd1', jobId: JOB }),
    ).resolves.toEqual({
      finalStatus: 'concluded',
    });
    expect(driver.calls).toEqual(['cancelJob']);
  });
});

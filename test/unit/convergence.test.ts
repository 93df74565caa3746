/**
 * Active commits that do not converge (DESIGN rule 11): the detection rule on its own, and the
 * block-job wait acting on each policy against a scripted driver whose guest dirties the top
 * faster than the job copies (len grows, the copy is speed-limited).
 */
import { rmSync } from 'node:fs';

import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import type { HostDeps } from '../../src/activities';
import { createConvergenceAction } from '../../src/activities/convergence-action';
import type { WaitStep } from '../../src/activities/inputs';
import type { Checkpoint } from '../../src/domain/checkpoint';
import { type ConvergenceState, graceOver, MIN_PROGRESS_BYTES, observeConvergence } from '../../src/domain/convergence';
import { mergeOptionsSchema } from '../../src/domain/input';
import type { BlockJob, JobStatus } from '../../src/drivers/driver';
import { JobDriver, runWait } from '../harness/job-driver';

const MiB = 1024 * 1024;

describe('observeConvergence', () => {
  const running = (offset: number, len: number) => ({ status: 'running', offset, len });

  test('a job whose remaining bytes shrink converges; one whose remaining does not, after the window', () => {
    let s = observeConvergence(undefined, running(0, 100 * MiB), 0, 10);
    expect(s).toMatchObject({ converging: true, remainingBytes: 100 * MiB, progressAt: 0 });
    s = observeConvergence(s, running(10 * MiB, 100 * MiB), 1000, 10);
    expect(s).toMatchObject({ converging: true, progressRemaining: 90 * MiB, progressAt: 1000 });
    // The guest dirties faster than the job copies: len grows more than offset.
    s = observeConvergence(s, running(20 * MiB, 115 * MiB), 5000, 10);
    expect(s).toMatchObject({ converging: true, remainingBytes: 95 * MiB, progressAt: 1000 });
    s = observeConvergence(s, running(30 * MiB, 125 * MiB), 10_999, 10);
    expect(s.converging).toBe(true);
    s = observeConvergence(s, running(31 * MiB, 126 * MiB), 11_000, 10);
    expect(s).toMatchObject({ converging: false, detectedAt: 11_000, progressAt: 1000, remainingBytes: 95 * MiB });
    // Still not converging later: detectedAt stays.
    s = observeConvergence(s, running(40 * MiB, 140 * MiB), 20_000, 10);
    expect(s).toMatchObject({ converging: false, detectedAt: 11_000 });
    expect(graceOver(s, 20_000, 10)).toBe(false);
    expect(graceOver(s, 21_000, 10)).toBe(true);
    // Real progress again: converging, window restarted.
    s = observeConvergence(s, running(100 * MiB, 140 * MiB), 21_500, 10);
    expect(s).toMatchObject({ converging: true, progressAt: 21_500, progressRemaining: 40 * MiB });
    expect(s.detectedAt).toBeUndefined();
  });

  test('less than 1 MiB (or 1 %) is no progress, however often', () => {
    let s = observeConvergence(undefined, running(0, 10 * MiB), 0, 5);
    for (let t = 1; t <= 6; t++)
      s = observeConvergence(s, running(t * (MIN_PROGRESS_BYTES / 8), 10 * MiB), t * 1000, 5);
    expect(s.converging).toBe(false);
    s = observeConvergence(undefined, running(0, 1000 * MiB), 0, 5);
    s = observeConvergence(s, running(5 * MiB, 1000 * MiB), 6000, 5); // 0.5 %: not 1 %
    expect(s.converging).toBe(false);
  });

  test('only a running job with bytes left can fail to converge; the lift time is kept', () => {
    const stalled: ConvergenceState = {
      converging: false,
      remainingBytes: 50 * MiB,
      progressRemaining: 50 * MiB,
      progressAt: 0,
      detectedAt: 10_000,
      liftedAt: 12_000,
    };
    for (const status of ['paused', 'ready', 'created', 'standby'])
      expect(observeConvergence(stalled, { status, offset: 0, len: 60 * MiB }, 20_000, 1)).toMatchObject({
        converging: true,
        progressAt: 20_000,
        liftedAt: 12_000,
      });
    expect(observeConvergence(stalled, running(60 * MiB, 60 * MiB), 20_000, 1).converging).toBe(true);
  });

  test('the merge options: defaults, bounds, unknown fields refused', () => {
    expect(mergeOptionsSchema.parse({}).convergence).toEqual({ windowSeconds: 60, policy: 'lift', graceSeconds: 60 });
    expect(mergeOptionsSchema.parse({ convergence: { policy: 'fail' } }).convergence).toEqual({
      windowSeconds: 60,
      policy: 'fail',
      graceSeconds: 60,
    });
    expect(mergeOptionsSchema.safeParse({ convergence: { windowSeconds: 0 } }).success).toBe(false);
    expect(mergeOptionsSchema.safeParse({ convergence: { policy: 'pivot' } }).success).toBe(false);
    expect(mergeOptionsSchema.safeParse({ convergence: { window: 5 } }).success).toBe(false);
  });
});

/**
 * One active commit on one VM: the guest dirties `dirtyRate` bytes/s of new data into the top (len
 * grows), the job copies at its speed (offset grows), `ready` once it caught up; time is real.
 */
class DirtyingDriver extends JobDriver {
  readonly calls: string[] = [];
  status: JobStatus = 'running';
  error: string | undefined;
  offset = 0;
  len = 64 * MiB;
  private at = Date.now();

  constructor(
    private speed: number,
    private readonly dirtyRate: number,
  ) {
    super();
  }

  private advance(): void {
    const now = Date.now();
    const dt = (now - this.at) / 1000;
    this.at = now;
    if (this.status !== 'running' && this.status !== 'ready') return;
    this.len += this.dirtyRate * dt;
    const copy = this.speed === 0 ? Infinity : this.speed * dt;
    this.offset = Math.min(this.len, this.offset + copy);
    if (this.offset === this.len) this.status = 'ready';
  }

  async listJobs(): Promise<BlockJob[]> {
    this.advance();
    const job: BlockJob = {
      id: 'lm.d1.v2',
      type: 'commit',
      status: this.status,
      offset: Math.floor(this.offset),
      len: Math.floor(this.len),
    };
    return [this.error === undefined ? job : { ...job, error: this.error }];
  }
  async completeJob(): Promise<void> {
    this.calls.push('completeJob');
    this.advance();
    if (this.status !== 'ready') throw new Error('not ready');
    this.status = 'concluded';
  }
  async cancelJob(): Promise<void> {
    this.calls.push('cancelJob');
    this.advance();
    // A cancel outside `ready` ends the job in error; in `ready` it ends it without a pivot.
    if (this.status === 'running') this.error = 'Operation canceled';
    this.status = 'concluded';
  }
  async setSpeed(_vm: string, _job: string, speed: number): Promise<void> {
    this.calls.push(`setSpeed ${speed}`);
    this.advance();
    this.speed = speed;
  }
  async nextJobChange(_vm: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      signal?.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

describe('waitForBlockJob: an active commit that does not converge', () => {
  // The guest dirties 50 MiB/s; the job is limited to 8 MiB/s (what rule 11 saw on a real guest).
  const dirty = 50 * MiB;
  const limit = 8 * MiB;
  const waitIn = (policy: 'lift' | 'fail' | 'report', graceSeconds = 0): WaitStep => ({
    vmId: 'vm1',
    diskId: 'd1',
    jobId: 'lm.d1.v2',
    pollIntervalMs: 100,
    commitKind: 'active',
    convergence: { windowSeconds: 1, policy, graceSeconds },
  });

  const roots: string[] = [];
  afterAll(() => {
    for (const root of roots) rmSync(root, { recursive: true, force: true });
  });

  function run(driver: DirtyingDriver, input: WaitStep, heartbeatDetails?: Checkpoint) {
    const wait = runWait(driver, input, heartbeatDetails);
    roots.push(wait.deps.storageRoot);
    return wait;
  }

  test('report: the heartbeat says not converging, with the remaining bytes and since when; nothing is done', async () => {
    const driver = new DirtyingDriver(limit, dirty);
    const { env, beats, result } = run(driver, waitIn('report'));
    const started = Date.now();
    await new Promise((r) => setTimeout(r, 2500));
    env.cancel();
    await expect(result).rejects.toBeInstanceOf(CancelledFailure);
    const last = beats[beats.length - 1];
    expect(last.convergence).toMatchObject({ converging: false });
    expect(last.convergence?.remainingBytes).toBeGreaterThan(64 * MiB);
    expect(last.convergence?.progressAt).toBeGreaterThanOrEqual(started - 50);
    expect(last.convergence?.detectedAt).toBeGreaterThanOrEqual(started + 1000);
    expect(driver.calls).toEqual([]);
  });

  test('lift: the speed limit is lifted once, the job becomes ready and is pivoted', async () => {
    const driver = new DirtyingDriver(limit, dirty);
    const { beats, result } = run(driver, waitIn('lift'));
    await expect(result).resolves.toMatchObject({ outcome: 'concluded', pivotRequested: true });
    expect(driver.calls).toEqual(['setSpeed 0', 'completeJob']);
    expect(beats.some((b) => b.convergence?.converging === false)).toBe(true);
    expect(beats.some((b) => b.convergence?.liftedAt !== undefined)).toBe(true);
  });

  test('lift waits for the grace: a job that converges meanwhile is left alone', async () => {
    const driver = new DirtyingDriver(limit, dirty);
    const { result } = run(driver, waitIn('lift', 3));
    // Someone raises the limit (setBandwidth) after the detection, within the grace.
    setTimeout(() => void driver.setSpeed('vm1', 'lm.d1.v2', 200 * MiB), 1800);
    await expect(result).resolves.toMatchObject({ outcome: 'concluded', pivotRequested: true });
    expect(driver.calls).toEqual(['setSpeed 209715200', 'completeJob']);
  });

  test('fail: the job is cancelled, never pivoted, and the wait fails as NotConverging', async () => {
    const driver = new DirtyingDriver(limit, dirty);
    const { beats, result } = run(driver, waitIn('fail'));
    const err = await result.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err).toMatchObject({ type: 'NotConverging', nonRetryable: true });
    expect((err as Error).message).toMatch(
      /did not converge: no progress for 1 s since .*MiB left to copy.*chain unchanged/,
    );
    expect(driver.calls).toEqual(['cancelJob']);
    expect(beats.some((b) => b.cancelledNotConverging === true)).toBe(true);
  });

  test('fail, resumed on a restarted agent after the cancel was marked but not sent: sent again, NotConverging', async () => {
    const driver = new DirtyingDriver(limit, dirty);
    const details: Checkpoint = {
      status: 'running',
      offset: 0,
      len: 64 * MiB,
      pivotRequested: false,
      convergence: {
        converging: false,
        remainingBytes: 64 * MiB,
        progressRemaining: 64 * MiB,
        progressAt: Date.now() - 5000,
        detectedAt: Date.now() - 1000,
      },
      cancelledNotConverging: true,
    };
    const { result } = run(driver, waitIn('fail', 3600), details);
    await expect(result).rejects.toMatchObject({ type: 'NotConverging' });
    expect(driver.calls).toEqual(['cancelJob']);
  });

  test('fail, resumed after the job ended by the cancel: NotConverging, not the cancel error; no pivot of a ready job', async () => {
    const driver = new DirtyingDriver(0, dirty);
    driver.status = 'concluded';
    driver.error = 'Operation canceled';
    const details: Checkpoint = {
      status: 'running',
      offset: 0,
      len: 64 * MiB,
      pivotRequested: false,
      cancelledNotConverging: true,
    };
    await expect(run(driver, waitIn('fail'), details).result).rejects.toMatchObject({ type: 'NotConverging' });
    // A job that reached `ready` while the cancel was on its way is cancelled, not completed.
    const ready = new DirtyingDriver(0, dirty);
    ready.status = 'ready';
    await expect(run(ready, waitIn('fail'), details).result).rejects.toMatchObject({ type: 'NotConverging' });
    expect(ready.calls).toEqual(['cancelJob']);
  });

  test('fail, resumed after the cancelled job was dismissed: NotConverging, not a vanished job for the chain check', async () => {
    const gone = Object.assign(new DirtyingDriver(0, dirty), { listJobs: async (): Promise<BlockJob[]> => [] });
    const details: Checkpoint = {
      status: 'concluded',
      offset: 0,
      len: 64 * MiB,
      pivotRequested: false,
      cancelledNotConverging: true,
    };
    await expect(run(gone, waitIn('fail'), details).result).rejects.toMatchObject({ type: 'NotConverging' });
    expect(gone.calls).toEqual([]);
  });

  test('a resumed wait keeps its window: a job stalled before the restart is found at once', async () => {
    const driver = new DirtyingDriver(limit, dirty);
    const details: Checkpoint = {
      status: 'running',
      offset: 0,
      len: 64 * MiB,
      pivotRequested: false,
      convergence: {
        converging: true,
        remainingBytes: 10 * MiB,
        progressRemaining: 10 * MiB,
        progressAt: Date.now() - 30_000,
      },
    };
    const { env, beats, result } = run(
      driver,
      { ...waitIn('report'), convergence: { windowSeconds: 20, policy: 'report', graceSeconds: 0 } },
      details,
    );
    await new Promise((r) => setTimeout(r, 400));
    env.cancel();
    await expect(result).rejects.toBeInstanceOf(CancelledFailure);
    expect(beats[0].convergence).toMatchObject({ converging: false });
  });
});

describe('the convergence action', () => {
  const stalled: ConvergenceState = {
    converging: false,
    remainingBytes: 10 * MiB,
    progressRemaining: 10 * MiB,
    progressAt: 0,
    detectedAt: 1_000,
  };
  const step = (policy: 'lift' | 'fail'): WaitStep => ({
    vmId: 'vm1',
    diskId: 'd1',
    jobId: 'lm.d1.v2',
    pollIntervalMs: 100,
    commitKind: 'active',
    convergence: { windowSeconds: 1, policy, graceSeconds: 0 },
  });

  test.each(['lift', 'fail'] as const)(
    '%s: never acts once the pivot was requested, however long the job stalled',
    async (policy) => {
      const driver = new DirtyingDriver(8 * MiB, 50 * MiB);
      const checkpoint: Checkpoint = {
        status: 'running',
        offset: 0,
        len: 10 * MiB,
        pivotRequested: true,
        convergence: stalled,
      };
      const env = new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') });
      const beats: Checkpoint[] = [];
      env.on('heartbeat', (d: Checkpoint) => beats.push(d));
      const input = step(policy);
      const act = createConvergenceAction({ driver } as Pick<HostDeps, 'driver'> as HostDeps, input, {
        windowSeconds: 1,
        policy,
        graceSeconds: 0,
      });
      const after: Checkpoint = await env.run(act, checkpoint, stalled, 60_000);
      expect(after).toBe(checkpoint);
      expect(driver.calls).toEqual([]);
      expect(beats).toEqual([]);
    },
  );

  test('lift, before a pivot: the limit is lifted once QEMU takes it, and the lift is heartbeated', async () => {
    const driver = new DirtyingDriver(8 * MiB, 50 * MiB);
    const checkpoint: Checkpoint = { status: 'running', offset: 0, len: 10 * MiB, pivotRequested: false };
    const env = new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') });
    const beats: Checkpoint[] = [];
    env.on('heartbeat', (d: Checkpoint) => beats.push(d));
    const act = createConvergenceAction({ driver } as Pick<HostDeps, 'driver'> as HostDeps, step('lift'), {
      windowSeconds: 1,
      policy: 'lift',
      graceSeconds: 0,
    });
    const after: Checkpoint = await env.run(act, checkpoint, stalled, 60_000);
    expect(driver.calls).toEqual(['setSpeed 0']);
    expect(after.convergence?.liftedAt).toBe(60_000);
    expect(beats).toEqual([after]);
  });
});

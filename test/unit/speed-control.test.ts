import { rmSync } from 'node:fs';

import type { WaitStep } from '../../src/activities/inputs';
import type { Checkpoint } from '../../src/domain/checkpoint';
import { ADAPTIVE_START_BYTES_PER_SEC, type GuestIo, SPEED_TICK_MS } from '../../src/domain/speed';
import type { BlockJob, JobStatus } from '../../src/drivers/driver';
import { recordFixedSpeed } from '../../src/storage/speed-record';
import { JobDriver, runWait } from '../harness/job-driver';

const MiB = 1024 * 1024;

/**
 * An active commit on a guest that writes `rate` times a second: each write takes 0.5 ms, plus
 * 0.5 ms for every `halfMiBps` MiB/s the job copies (so the latency doubles at that speed). An
 * unlimited job copies 400 MiB/s.
 */
class GuestModel extends JobDriver {
  readonly speeds: number[] = [];
  status: JobStatus = 'running';
  offset = 0;
  private io: GuestIo = { readOps: 0, readNs: 0, writeOps: 10_000, writeNs: 10_000 * 0.5e6, flushOps: 0, flushNs: 0 };
  private at = Date.now();

  constructor(
    private speed: number,
    private readonly rate: number,
    private readonly halfMiBps = 64,
    readonly len = 96 * MiB,
  ) {
    super();
  }

  private advance(): void {
    const now = Date.now();
    const dt = (now - this.at) / 1000;
    this.at = now;
    if (this.status !== 'running') return;
    const copying = this.speed === 0 ? 400 * MiB : this.speed;
    this.offset = Math.min(this.len, this.offset + copying * dt);
    const ops = this.rate * dt;
    const latencyNs = 0.5e6 * (1 + copying / MiB / this.halfMiBps);
    this.io = { ...this.io, writeOps: this.io.writeOps + ops, writeNs: this.io.writeNs + ops * latencyNs };
    if (this.offset >= this.len) this.status = 'ready';
  }

  start(): GuestIo {
    this.advance();
    return this.io;
  }
  override guestIo = async (): Promise<GuestIo> => {
    this.advance();
    return { ...this.io, writeOps: Math.floor(this.io.writeOps), writeNs: Math.floor(this.io.writeNs) };
  };
  async listJobs(): Promise<BlockJob[]> {
    this.advance();
    return [{ id: 'lm.d1.v2', type: 'commit', status: this.status, offset: Math.floor(this.offset), len: this.len }];
  }
  async setSpeed(_vm: string, _job: string, speed: number): Promise<void> {
    this.advance();
    this.speeds.push(speed / MiB);
    this.speed = speed;
  }
  async completeJob(): Promise<void> {
    this.status = 'concluded';
  }
  async cancelJob(): Promise<void> {
    this.status = 'concluded';
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

const roots: string[] = [];
afterAll(() => {
  for (const root of roots) rmSync(root, { recursive: true, force: true });
});

function run(driver: GuestModel, input: WaitStep, heartbeatDetails?: Checkpoint) {
  const wait = runWait(driver, input, heartbeatDetails);
  roots.push(wait.deps.storageRoot);
  return wait;
}

const adaptive = (driver: GuestModel, bytesPerSec: number, start = true): WaitStep => ({
  vmId: 'vm1',
  diskId: 'd1',
  jobId: 'lm.d1.v2',
  pollIntervalMs: 500,
  commitKind: 'active',
  speed: { latencyFactor: 2, ...(start ? { start: { io: driver.start(), at: Date.now(), bytesPerSec } } : {}) },
});

describe('waitForBlockJob in the adaptive mode', () => {
  test('a busy guest: the speed rises while the latency is under its target, falls when over, and the job pivots', async () => {
    // The guest's latency is at its target (1 ms) when the job copies 78 MiB/s.
    const driver = new GuestModel(ADAPTIVE_START_BYTES_PER_SEC, 1000, 78, 256 * MiB);
    const { beats, result } = run(driver, adaptive(driver, ADAPTIVE_START_BYTES_PER_SEC));
    await expect(result).resolves.toMatchObject({ outcome: 'concluded', pivotRequested: true });
    // Slow start from 16: 24, 36, 54 (0.85 ms), 81 (1.02 ms: over), halved to 40.5, then +4 a tick.
    expect(driver.speeds.slice(0, 6)).toEqual([24, 36, 54, 81, 40.5, 44.5]);
    const last = beats.filter((b) => b.speed).pop()?.speed;
    expect(last).toMatchObject({ slowStart: false, changes: driver.speeds.length });
    expect(last?.targetMs).toBeCloseTo(1, 3);
  });

  test('an idle guest: the job is made unlimited at the first tick', async () => {
    const driver = new GuestModel(ADAPTIVE_START_BYTES_PER_SEC, 0);
    const { result } = run(driver, adaptive(driver, ADAPTIVE_START_BYTES_PER_SEC));
    await expect(result).resolves.toMatchObject({ outcome: 'concluded' });
    expect(driver.speeds).toEqual([0]);
  });

  test('a speed an update fixed: the controller sets it again and stands down for good', async () => {
    const driver = new GuestModel(ADAPTIVE_START_BYTES_PER_SEC, 1000);
    const { deps, beats, result } = run(driver, adaptive(driver, ADAPTIVE_START_BYTES_PER_SEC));
    await new Promise((r) => setTimeout(r, SPEED_TICK_MS * 2.5));
    await recordFixedSpeed(deps.storageRoot, 'd1', 'v2', 48 * MiB);
    const before = driver.speeds.length;
    await expect(result).resolves.toMatchObject({ outcome: 'concluded' });
    expect(driver.speeds.slice(before)).toEqual([48]);
    expect(beats.pop()?.speed?.fixedBytesPerSec).toBe(48 * MiB);
  });

  test('resumed on a restarted agent: the controller goes on from the heartbeat', async () => {
    const driver = new GuestModel(80 * MiB, 1000);
    const io = await driver.guestIo();
    const details: Checkpoint = {
      status: 'running',
      offset: 0,
      len: driver.len,
      pivotRequested: false,
      speed: {
        bytesPerSec: 80 * MiB,
        baseline: { writeNs: 0.5e6 },
        io,
        offset: 0,
        at: Date.now(),
        slowStart: false,
        changes: 5,
      },
    };
    const { beats, result } = run(driver, adaptive(driver, 0, false), details);
    await expect(result).resolves.toMatchObject({ outcome: 'concluded' });
    // 80 MiB/s is over the target (1.125 ms against 1): halved, not restarted careful at 32.
    expect(driver.speeds[0]).toBe(40);
    expect(beats.filter((b) => b.speed).pop()?.speed?.changes).toBeGreaterThan(5);
  });

  test('an adopted job (its start not seen) starts careful, from the counters as they are', async () => {
    const driver = new GuestModel(0, 1000);
    const { result } = run(driver, adaptive(driver, 0, false));
    await expect(result).resolves.toMatchObject({ outcome: 'concluded' });
    expect(driver.speeds[0]).toBe(ADAPTIVE_START_BYTES_PER_SEC / MiB);
  });

  test('counters that cannot be read leave the speed as it is: the merge goes on', async () => {
    const driver = new GuestModel(ADAPTIVE_START_BYTES_PER_SEC, 1000);
    const start = adaptive(driver, ADAPTIVE_START_BYTES_PER_SEC);
    driver.guestIo = () => Promise.reject(new Error('no counters'));
    const { result } = run(driver, start);
    await expect(result).resolves.toMatchObject({ outcome: 'concluded', pivotRequested: true });
    expect(driver.speeds).toEqual([]);
  });

  test('an adopted job whose counters cannot be read: the wait tries again each tick, not each turn', async () => {
    const driver = new GuestModel(0, 1000, 64, 48 * MiB);
    let reads = 0;
    driver.guestIo = () => {
      reads++;
      return Promise.reject(new Error('no counters'));
    };
    const { result } = run(driver, adaptive(driver, 0, false));
    const t0 = Date.now();
    await expect(result).resolves.toMatchObject({ outcome: 'concluded', pivotRequested: true });
    // Unlimited, 48 MiB take 120 ms: one read at the start, at most one more per tick after it.
    expect(reads).toBeGreaterThanOrEqual(1);
    expect(reads).toBeLessThanOrEqual(1 + Math.ceil((Date.now() - t0) / SPEED_TICK_MS));
    expect(driver.speeds).toEqual([]);
  });

  test('the fixed mode reads no counters', async () => {
    const driver = new GuestModel(0, 1000);
    driver.guestIo = () => Promise.reject(new Error('the fixed mode must not read the guest'));
    const { result } = run(driver, { ...adaptive(driver, 0), speed: undefined });
    await expect(result).resolves.toMatchObject({ outcome: 'concluded' });
    expect(driver.speeds).toEqual([]);
  });
});

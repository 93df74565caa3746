import {
  ADAPTIVE_START_BYTES_PER_SEC,
  baselineOf,
  controlSpeed,
  type GuestIo,
  INCREASE_STEP_BYTES_PER_SEC,
  MIN_BYTES_PER_SEC,
  speedProgress,
  type SpeedState,
  startBytesPerSec,
  startSpeed,
} from '../../src/domain/speed';

const MiB = 1024 * 1024;
const ms = 1e6; // ns

const io = (o: Partial<GuestIo> = {}): GuestIo => ({
  readOps: 0,
  readNs: 0,
  writeOps: 0,
  writeNs: 0,
  flushOps: 0,
  flushNs: 0,
  ...o,
});

/** The counters `prev` plus `ops` writes of `latencyMs` each. */
const writes = (prev: GuestIo, ops: number, latencyMs: number): GuestIo => ({
  ...prev,
  writeOps: prev.writeOps + ops,
  writeNs: prev.writeNs + ops * latencyMs * ms,
});

/** A guest that wrote 10,000 times at 0.5 ms before the job; the job started at `bytesPerSec`. */
const started = (bytesPerSec: number): SpeedState => startSpeed({ io: writes(io(), 10_000, 0.5), at: 0, bytesPerSec });

describe('the baseline and the start', () => {
  test('the mean latency of each kind the guest used; none for a kind it never used', () => {
    expect(baselineOf(io({ readOps: 10, readNs: 20 * ms, writeOps: 4, writeNs: 2 * ms }))).toEqual({
      readNs: 2 * ms,
      writeNs: 0.5 * ms,
    });
    expect(baselineOf(io())).toEqual({});
  });

  test('a guest that did I/O while the merge step checked starts careful; an idle one unlimited', () => {
    const before = writes(io(), 100, 1);
    expect(startBytesPerSec(before, writes(before, 1, 1))).toBe(ADAPTIVE_START_BYTES_PER_SEC);
    expect(startBytesPerSec(before, { ...before, flushOps: before.flushOps + 1 })).toBe(ADAPTIVE_START_BYTES_PER_SEC);
    expect(startBytesPerSec(before, before)).toBe(0);
  });
});

describe('controlSpeed', () => {
  test('under the target the slow start raises the speed by half each tick, and says the latency and its target', () => {
    let s = started(32 * MiB);
    s = controlSpeed(s, writes(s.io, 100, 0.6), 6 * MiB, 200, 2);
    expect(s).toMatchObject({ bytesPerSec: 48 * MiB, slowStart: true, latencyMs: 0.6, targetMs: 1, changes: 1 });
    expect(s.requestsPerSec).toBe(500);
    s = controlSpeed(s, writes(s.io, 100, 0.9), 18 * MiB, 400, 2);
    expect(s).toMatchObject({ bytesPerSec: 72 * MiB, changes: 2 });
  });

  test('over the target the speed halves and the slow start ends; then it rises by a step a tick', () => {
    let s = { ...started(32 * MiB), bytesPerSec: 128 * MiB };
    s = controlSpeed(s, writes(s.io, 100, 1.1), 25 * MiB, 200, 2);
    expect(s).toMatchObject({ bytesPerSec: 64 * MiB, slowStart: false, latencyMs: 1.1, targetMs: 1 });
    s = controlSpeed(s, writes(s.io, 100, 0.7), 38 * MiB, 400, 2);
    expect(s.bytesPerSec).toBe(64 * MiB + INCREASE_STEP_BYTES_PER_SEC);
  });

  test('exactly at the target is not over it', () => {
    const s = started(32 * MiB);
    expect(controlSpeed(s, writes(s.io, 100, 1), 6 * MiB, 200, 2).bytesPerSec).toBe(48 * MiB);
  });

  test('an unlimited job over the target is limited to half of what it copied; never below the floor', () => {
    const s = started(0);
    // 100 MiB in 200 ms: 500 MiB/s; half is 250.
    expect(controlSpeed(s, writes(s.io, 40, 9), 100 * MiB, 200, 2).bytesPerSec).toBe(250 * MiB);
    const slow = { ...started(5 * MiB), slowStart: false };
    expect(controlSpeed(slow, writes(slow.io, 40, 9), MiB, 200, 2).bytesPerSec).toBe(MIN_BYTES_PER_SEC);
  });

  test('an unlimited job under the target stays unlimited: the guest does not feel it', () => {
    const s = started(0);
    const next = controlSpeed(s, writes(s.io, 100, 0.7), 100 * MiB, 200, 2);
    expect(next).toMatchObject({ bytesPerSec: 0, changes: 0, latencyMs: 0.7 });
  });

  test('an idle guest gets an unlimited job, without a latency to show', () => {
    let s: SpeedState = { ...started(64 * MiB), latencyMs: 3, targetMs: 1 };
    // One request in a second is idle (fewer than 10 a second).
    s = controlSpeed(s, writes(s.io, 1, 50), 64 * MiB, 1000, 2);
    expect(s).toMatchObject({ bytesPerSec: 0, changes: 1 });
    expect(s.latencyMs).toBeUndefined();
    expect(s.targetMs).toBeUndefined();
    // Nine in a second is still idle; ten is not.
    expect(controlSpeed(started(64 * MiB), writes(started(0).io, 9, 50), 0, 1000, 2).bytesPerSec).toBe(0);
    expect(controlSpeed(started(64 * MiB), writes(started(0).io, 10, 50), 0, 1000, 2).bytesPerSec).toBe(32 * MiB);
    // A slow start's growth is rounded down to whole bytes.
    const odd = started(3);
    expect(controlSpeed(odd, writes(odd.io, 100, 0.5), 0, 200, 2).bytesPerSec).toBe(4);
  });

  test('each kind is measured against its own baseline: a slow kind that was always slow is no signal', () => {
    // Reads took 5 ms and writes 0.5 ms before the job.
    const before = io({ readOps: 1000, readNs: 5000 * ms, writeOps: 1000, writeNs: 500 * ms });
    let s = startSpeed({ io: before, at: 0, bytesPerSec: 32 * MiB });
    const mix = { ...writes(before, 20, 0.5), readOps: 1080, readNs: 5000 * ms + 80 * 5 * ms };
    s = controlSpeed(s, mix, 6 * MiB, 200, 2);
    // 4.1 ms a request on average, against 4.1 expected: under the target of 8.2.
    expect(s).toMatchObject({ bytesPerSec: 48 * MiB, latencyMs: 4.1, targetMs: 8.2 });
  });

  test('a kind the guest never used before the job gets its first interval as its baseline', () => {
    let s = started(32 * MiB);
    const flushes = (prev: GuestIo, n: number, latencyMs: number): GuestIo => ({
      ...prev,
      flushOps: prev.flushOps + n,
      flushNs: prev.flushNs + n * latencyMs * ms,
    });
    s = controlSpeed(s, flushes(s.io, 50, 3), 6 * MiB, 200, 2);
    expect(s.baseline.flushNs).toBe(3 * ms);
    expect(s.bytesPerSec).toBe(48 * MiB);
    s = controlSpeed(s, flushes(s.io, 50, 7), 12 * MiB, 400, 2);
    expect(s.bytesPerSec).toBe(24 * MiB);
  });

  test('a speed above 2 GiB/s is none: the job becomes unlimited', () => {
    const s = { ...started(32 * MiB), bytesPerSec: 1536 * MiB };
    expect(controlSpeed(s, writes(s.io, 100, 0.5), 0, 200, 2).bytesPerSec).toBe(0);
  });

  test('no time passed: nothing changes', () => {
    const s = started(32 * MiB);
    expect(controlSpeed(s, writes(s.io, 100, 9), 6 * MiB, 0, 2)).toBe(s);
  });

  test('the factor sets the target', () => {
    const s = started(32 * MiB);
    expect(controlSpeed(s, writes(s.io, 100, 0.7), 6 * MiB, 200, 1.25).bytesPerSec).toBe(16 * MiB);
    expect(controlSpeed(s, writes(s.io, 100, 0.7), 6 * MiB, 200, 1.5).bytesPerSec).toBe(48 * MiB);
  });
});

describe('controlSpeed at its edges', () => {
  test('an interval is measured from the last tick, whenever that was', () => {
    const s = startSpeed({ io: writes(io(), 10_000, 0.5), at: 10_000, bytesPerSec: 32 * MiB });
    // 100 requests in the 500 ms since the tick at 10 s: 200 a second, busy.
    const next = controlSpeed(s, writes(s.io, 100, 0.6), 6 * MiB, 10_500, 2);
    expect(next).toMatchObject({ bytesPerSec: 48 * MiB, requestsPerSec: 200 });
  });

  test("an unlimited job's copy rate is what it copied since the last tick", () => {
    const s = { ...started(0), offset: 400 * MiB };
    // 100 MiB more in 200 ms: 500 MiB/s; halved to 250.
    expect(controlSpeed(s, writes(s.io, 40, 9), 500 * MiB, 200, 2).bytesPerSec).toBe(250 * MiB);
  });

  test('an unlimited job under the target stays unlimited after the slow start too', () => {
    const s = { ...started(0), slowStart: false };
    expect(controlSpeed(s, writes(s.io, 100, 0.7), 100 * MiB, 200, 2)).toMatchObject({ bytesPerSec: 0, changes: 0 });
  });

  test('an idle guest on an unlimited job: nothing changes, nothing counted', () => {
    const s = started(0);
    expect(controlSpeed(s, s.io, 10 * MiB, 1000, 2)).toMatchObject({ bytesPerSec: 0, changes: 0 });
  });

  test('2 GiB/s itself is still a limit; above it none', () => {
    const s = { ...started(32 * MiB), bytesPerSec: 2044 * MiB, slowStart: false };
    expect(controlSpeed(s, writes(s.io, 100, 0.5), 0, 200, 2).bytesPerSec).toBe(2048 * MiB);
  });

  test('time without requests, or requests without time, are no measure', () => {
    const s = started(32 * MiB);
    // Read time rose with no read completed: ignored; writes at the baseline.
    const odd = { ...writes(s.io, 100, 0.5), readNs: s.io.readNs + 1000 * ms };
    expect(controlSpeed(s, odd, 6 * MiB, 200, 2)).toMatchObject({ bytesPerSec: 48 * MiB, latencyMs: 0.5 });
    // Flushes that took no time, of a kind never used before: no baseline from them.
    const free = { ...writes(s.io, 100, 0.5), flushOps: 50 };
    const next = controlSpeed(s, free, 6 * MiB, 200, 2);
    expect(next.baseline.flushNs).toBeUndefined();
    expect(next).toMatchObject({ latencyMs: 0.5, targetMs: 1, requestsPerSec: 750 });
  });

  test('requests of no kind with a baseline cannot be judged: the job is unlimited', () => {
    const s = startSpeed({ io: io(), at: 0, bytesPerSec: 32 * MiB });
    // 50 flushes of no measurable time: busy, but nothing to compare with.
    expect(controlSpeed(s, { ...io(), flushOps: 50 }, 0, 200, 2)).toMatchObject({ bytesPerSec: 0 });
  });

  test('a baseline needs requests and their time', () => {
    expect(baselineOf(io({ readOps: 0, readNs: 5 * ms, writeOps: 5, writeNs: 0 }))).toEqual({});
  });

  test('the figures the user guide gives', () => {
    expect(ADAPTIVE_START_BYTES_PER_SEC).toBe(16 * MiB);
    expect(INCREASE_STEP_BYTES_PER_SEC).toBe(4 * MiB);
    expect(MIN_BYTES_PER_SEC).toBe(4 * MiB);
  });
});

describe('speedProgress', () => {
  test('adaptive: the speed and the latency against its target; fixed once an update set it', () => {
    const s: SpeedState = { ...started(32 * MiB), latencyMs: 0.6, targetMs: 1 };
    expect(speedProgress(s)).toEqual({
      mode: 'adaptive',
      bytesPerSec: 32 * MiB,
      guestLatencyMs: 0.6,
      targetLatencyMs: 1,
    });
    expect(speedProgress(started(0))).toStrictEqual({ mode: 'adaptive', bytesPerSec: 0 });
    expect(speedProgress({ ...s, fixedBytesPerSec: 8 * MiB })).toEqual({ mode: 'fixed', bytesPerSec: 8 * MiB });
  });
});

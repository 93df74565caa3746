import { z } from 'zod';

/**
 * The adaptive speed of a block job: the host agent sets the job's speed from the guest's own I/O
 * latency on that disk (QEMU's `query-blockstats`, libvirt's `domblkstat`), so the guest barely
 * feels the merge and an idle guest gets an unlimited job.
 *
 * The scheme is AIMD with a slow start, as TCP's congestion control:
 * - the baseline is the guest's mean latency of each request kind (read, write, flush) before the
 *   job, from the drive's counters since the VM started;
 * - each tick compares the interval's latency with what the same requests took at the baseline
 *   (so a changed mix of reads and writes is no signal), against the target `latencyFactor`;
 * - under the target the speed grows by half until the first time it is over (slow start), then
 *   rises by a fixed step per tick (additive increase); over the target it halves (multiplicative
 *   decrease), never below a floor;
 * - a guest doing (almost) no I/O gets an unlimited job; one that starts again is limited from the
 *   job's measured copy rate at its first interval over the target.
 * Times are the host agent's wall clock (epoch ms), kept in the wait's heartbeat details so that a
 * wait resumed on a restarted agent resumes the controller.
 */

export const SPEED_MODES = ['adaptive', 'fixed'] as const;
export type SpeedMode = (typeof SPEED_MODES)[number];

export const DEFAULT_LATENCY_FACTOR = 2;

const MiB = 1024 * 1024;

/**
 * How often the controller reads the guest's counters and may change the speed. A limited active
 * commit copies in bursts (QEMU's mirror: a full-speed chunk, then a pause), so a shorter interval
 * sees a burst or none (lab/probes/speed-latency.ts).
 */
export const SPEED_TICK_MS = 500;
/**
 * The speed of a job started while the guest does I/O: careful, as the probe found a guest writing
 * 200 times a second under 2x its latency at 16 MiB/s and near 3x at 32; the slow start raises it.
 */
export const ADAPTIVE_START_BYTES_PER_SEC = 16 * MiB;
/** The floor of a decrease: the job always copies, and convergence is the convergence policy's. */
export const MIN_BYTES_PER_SEC = 4 * MiB;
/**
 * The slow start's growth per tick: by half, not double, since each overshoot past the guest's
 * target costs the guest a tick of slow writes, which is what its p99 latency sees.
 */
export const SLOW_START_FACTOR = 1.5;
/** The additive increase per tick once the slow start ended. */
export const INCREASE_STEP_BYTES_PER_SEC = 4 * MiB;
/** The multiplicative decrease. */
export const DECREASE_FACTOR = 0.5;
/** A speed above this is as good as none: the job is made unlimited. */
export const UNLIMITED_ABOVE_BYTES_PER_SEC = 2048 * MiB;
/** Fewer guest requests per second than this is an idle guest. */
export const IDLE_REQUESTS_PER_SEC = 10;

/** A drive's I/O counters since the VM started: requests and their total time, in ns, by kind. */
export const guestIoSchema = z.object({
  readOps: z.number().nonnegative(),
  readNs: z.number().nonnegative(),
  writeOps: z.number().nonnegative(),
  writeNs: z.number().nonnegative(),
  flushOps: z.number().nonnegative(),
  flushNs: z.number().nonnegative(),
});
export type GuestIo = z.infer<typeof guestIoSchema>;

const KINDS = ['read', 'write', 'flush'] as const;
type Kind = (typeof KINDS)[number];
const opsOf = (io: GuestIo, k: Kind): number => io[`${k}Ops`];
const nsOf = (io: GuestIo, k: Kind): number => io[`${k}Ns`];

/** The guest's mean latency per request kind before the job, ns; absent for a kind it never used. */
export const latencyBaselineSchema = z.object({
  readNs: z.number().positive().optional(),
  writeNs: z.number().positive().optional(),
  flushNs: z.number().positive().optional(),
});
export type LatencyBaseline = z.infer<typeof latencyBaselineSchema>;

/** What the merge step saw when it started the job: the wait's controller starts from it. */
export const speedStartSchema = z.object({
  io: guestIoSchema,
  /** When `io` was read (epoch ms, host clock). */
  at: z.number(),
  bytesPerSec: z.number().int().nonnegative(),
});
export type SpeedStart = z.infer<typeof speedStartSchema>;

/** The controller's state, in the wait's heartbeat details (readable as such in the Web UI). */
export const speedStateSchema = z.object({
  /** The speed the controller set last, bytes per second (0 is unlimited). */
  bytesPerSec: z.number().int().nonnegative(),
  baseline: latencyBaselineSchema,
  /** The counters and the job's offset at the last tick, and when (epoch ms). */
  io: guestIoSchema,
  offset: z.number().nonnegative(),
  at: z.number(),
  /** True until the guest's latency was first over the target. */
  slowStart: z.boolean(),
  /** The last interval: the guest's mean latency and its target, ms, and its requests per second. */
  latencyMs: z.number().nonnegative().optional(),
  targetMs: z.number().nonnegative().optional(),
  requestsPerSec: z.number().nonnegative().optional(),
  /** How often the controller changed the speed. */
  changes: z.number().int().nonnegative(),
  /** Set once a `setBandwidth` update fixed the speed: the controller stands down for good. */
  fixedBytesPerSec: z.number().int().nonnegative().optional(),
});
export type SpeedState = z.infer<typeof speedStateSchema>;

/** The guest's mean latency of each kind in `io`, the counters since the VM started. */
export function baselineOf(io: GuestIo): LatencyBaseline {
  const baseline: LatencyBaseline = {};
  for (const k of KINDS) if (opsOf(io, k) > 0 && nsOf(io, k) > 0) baseline[`${k}Ns`] = nsOf(io, k) / opsOf(io, k);
  return baseline;
}

/** The controller's first state, from what the merge step saw when it started the job. */
export function startSpeed(start: SpeedStart): SpeedState {
  return {
    bytesPerSec: start.bytesPerSec,
    baseline: baselineOf(start.io),
    io: start.io,
    offset: 0,
    at: start.at,
    slowStart: true,
    changes: 0,
  };
}

/** Whether the guest did I/O between two readings of its counters: the merge step's start speed. */
export function startBytesPerSec(before: GuestIo, after: GuestIo): number {
  const requests = KINDS.reduce((n, k) => n + opsOf(after, k) - opsOf(before, k), 0);
  return requests > 0 ? ADAPTIVE_START_BYTES_PER_SEC : 0;
}

/**
 * The state after one more reading of the guest's counters `io` and the job's `offset` at `now`
 * (epoch ms); its `bytesPerSec` is the speed the job should have. Pure.
 */
export function controlSpeed(
  state: SpeedState,
  io: GuestIo,
  offset: number,
  now: number,
  latencyFactor: number,
): SpeedState {
  const seconds = (now - state.at) / 1000;
  if (seconds <= 0) return state;
  let requests = 0;
  /** The requests of kinds with a baseline: what the latency is the mean of. */
  let judged = 0;
  let actualNs = 0;
  let expectedNs = 0;
  const baseline = { ...state.baseline };
  for (const k of KINDS) {
    const ops = opsOf(io, k) - opsOf(state.io, k);
    const ns = nsOf(io, k) - nsOf(state.io, k);
    if (ops <= 0) continue;
    requests += ops;
    // A kind the guest never used before the job gets its first interval as its baseline.
    const base = baseline[`${k}Ns`] ?? (ns > 0 ? ns / ops : undefined);
    if (base === undefined) continue;
    baseline[`${k}Ns`] = base;
    judged += ops;
    actualNs += ns;
    expectedNs += ops * base;
  }
  const copied = Math.max(0, offset - state.offset);
  const next: SpeedState = { ...state, baseline, io, offset, at: now, requestsPerSec: round2(requests / seconds) };
  delete next.latencyMs;
  delete next.targetMs;
  if (requests / seconds < IDLE_REQUESTS_PER_SEC || expectedNs === 0) return changed(next, 0);
  next.latencyMs = round3(actualNs / judged / 1e6);
  next.targetMs = round3((expectedNs / judged / 1e6) * latencyFactor);
  if (actualNs > expectedNs * latencyFactor) {
    // Unlimited or not, the job copied at most this fast: halve what it did.
    const current = state.bytesPerSec > 0 ? state.bytesPerSec : copied / seconds;
    const lower = Math.max(MIN_BYTES_PER_SEC, Math.floor(current * DECREASE_FACTOR));
    return changed({ ...next, slowStart: false }, lower);
  }
  if (state.bytesPerSec === 0) return next;
  const higher = state.slowStart
    ? Math.floor(state.bytesPerSec * SLOW_START_FACTOR)
    : state.bytesPerSec + INCREASE_STEP_BYTES_PER_SEC;
  return changed(next, higher > UNLIMITED_ABOVE_BYTES_PER_SEC ? 0 : higher);
}

function changed(state: SpeedState, bytesPerSec: number): SpeedState {
  if (bytesPerSec === state.bytesPerSec) return state;
  return { ...state, bytesPerSec, changes: state.changes + 1 };
}

function round2(n: number): number {
  return Math.round(n * 100) / 100;
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}

/** The speed fields of a disk's progress (domain/progress.ts), from the wait's controller state. */
export interface SpeedProgress {
  mode: SpeedMode;
  /** The job's speed now, bytes per second (0 is unlimited). */
  bytesPerSec: number;
  /** The guest's mean request latency in the last interval, and its target, ms. */
  guestLatencyMs?: number;
  targetLatencyMs?: number;
}

export function speedProgress(s: SpeedState): SpeedProgress {
  if (s.fixedBytesPerSec !== undefined) return { mode: 'fixed', bytesPerSec: s.fixedBytesPerSec };
  return {
    mode: 'adaptive',
    bytesPerSec: s.bytesPerSec,
    ...(s.latencyMs === undefined ? {} : { guestLatencyMs: s.latencyMs }),
    ...(s.targetMs === undefined ? {} : { targetLatencyMs: s.targetMs }),
  };
}

import { ApplicationFailure, CancelledFailure, RetryState, TimeoutFailure, TimeoutType } from '@temporalio/common';
import { ActivityFailure } from '@temporalio/workflow';

import type { HostActivities } from '../../src/activities';
import { hostStepOptions, localStepOptions, mergeStepOptions, offlineCommitOptions } from '../../src/config/policy';
import type { DiskMergeInput } from '../../src/domain/input';
import { DiskMergeWorkflow } from '../../src/workflows/disk-merge';

/**
 * DiskMergeWorkflow's decisions, step by step, with the workflow API stubbed: which host steps run
 * after which outcome, that nothing is deleted after a failed job, a vanished job whose chain check
 * fails, a refused step or a cancel, and which failure type the disk ends with. (The same workflow on
 * a real dev server: test/workflow; these run in the Node process, where the mutation tool's
 * mutant switch reaches them.)
 */

interface Call {
  step: string;
  args: unknown;
  summary: string;
  taskQueue: string | undefined;
}

const mockWf = {
  calls: [] as Call[],
  results: new Map<string, (args: unknown) => unknown>(),
  signals: [] as { to: string; progress: Record<string, unknown> }[],
  counters: [] as { name: string; value: number; tags: Record<string, unknown> }[],
  upserts: [] as unknown[],
  patched: true,
  /** Patches absent from the history even when `patched` is true. */
  unpatched: new Set<string>(),
  /** The patch ids the workflow asked about: those recorded in existing histories. */
  patchIds: new Set<string>(),
  options: [] as { taskQueue?: string; scheduleToStartTimeout?: unknown }[],
  /** The queue the workflow runs on, and when it started (workflowInfo). */
  taskQueue: 'live-merge-engine',
  startTime: new Date(),
  historyLength: 3,
};

/** Host steps as the workflow sees them; a local one's calls have the queue `local`. */
function proxy(options: { taskQueue?: string }) {
  mockWf.options.push(options);
  return new Proxy(
    {},
    {
      get: (_t, name: string) => ({
        executeWithOptions: async (opts: { summary: string }, [args]: unknown[]) => {
          mockWf.calls.push({ step: name, args, summary: opts.summary, taskQueue: options.taskQueue });
          const result = mockWf.results.get(name);
          return result ? result(args) : {};
        },
      }),
    },
  );
}

jest.mock('@temporalio/workflow', () => {
  const actual = jest.requireActual<Record<string, unknown>>('@temporalio/workflow');
  const noop = (): void => undefined;
  return {
    ...actual,
    proxyActivities: (options: { taskQueue?: string }) => proxy(options),
    proxyLocalActivities: (options: Record<string, unknown>) => proxy({ ...options, taskQueue: 'local' }),
    CancellationScope: { nonCancellable: <T>(fn: () => Promise<T>): Promise<T> => fn() },
    patched: (id: string) => {
      mockWf.patchIds.add(id);
      return mockWf.patched && !mockWf.unpatched.has(id);
    },
    getExternalWorkflowHandle: (to: string) => ({
      signal: async (_def: unknown, progress: Record<string, unknown>) => {
        mockWf.signals.push({ to, progress });
        if (to === 'gone-parent') throw new Error('parent gone');
      },
    }),
    upsertSearchAttributes: (attrs: { key: { name: string }; value: unknown }[]) =>
      mockWf.upserts.push(attrs.map((a) => `${a.key.name}=${String(a.value)}`)),
    workflowInfo: () => ({
      runStartTime: new Date(),
      startTime: mockWf.startTime,
      taskQueue: mockWf.taskQueue,
      historyLength: mockWf.historyLength,
    }),
    metricMeter: {
      createHistogram: () => ({ record: noop }),
      createCounter: (name: string) => ({
        add: (value: number, tags: Record<string, unknown>) => mockWf.counters.push({ name, value, tags }),
      }),
    },
    log: { info: noop, warn: noop, debug: noop, error: noop },
  };
});

const input = (extra: Partial<DiskMergeInput> = {}): DiskMergeInput => ({
  snapshotId: 's1',
  vmId: 'vm1',
  hostId: 'h1',
  disk: { diskId: 'd1', baseVolumeId: 'v1', topVolumeId: 'v2' },
  options: {
    pollIntervalMs: 100,
    bandwidthBytesPerSec: 5,
    latencyFactor: 2,
    hostPickupTimeoutSeconds: 120,
    convergence: { windowSeconds: 60, policy: 'lift', graceSeconds: 60 },
  },
  parentWorkflowId: 'parent',
  ...extra,
});
const step = { vmId: 'vm1', diskId: 'd1', baseVolumeId: 'v1', topVolumeId: 'v2' };
const jobStep = { vmId: 'vm1', diskId: 'd1', jobId: 'lm.d1.v2' };

type Step = keyof HostActivities;
const answer = (name: Step, fn: (args: unknown) => unknown): void => void mockWf.results.set(name, fn);
const steps = (): string[] => mockWf.calls.map((c) => c.step);
const phases = (): unknown[] => mockWf.signals.map((s) => s.progress.phase);
/** What a host step's failure looks like in the workflow: an ActivityFailure around the step's own. */
const refused = (type: string, message: string): ActivityFailure =>
  new ActivityFailure(
    'activity failed',
    'x',
    '1',
    RetryState.NON_RETRYABLE_FAILURE,
    'w',
    ApplicationFailure.create({ type, message, nonRetryable: true }),
  );

async function failureOf(p: Promise<unknown>): Promise<ApplicationFailure> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ApplicationFailure) return err;
    throw err;
  }
  throw new Error('expected the disk to fail');
}

beforeEach(() => {
  mockWf.calls = [];
  mockWf.results = new Map();
  mockWf.signals = [];
  mockWf.counters = [];
  mockWf.upserts = [];
  mockWf.patched = true;
  mockWf.unpatched = new Set();
  mockWf.patchIds = new Set();
  mockWf.options = [];
  mockWf.taskQueue = 'live-merge-engine';
  mockWf.startTime = new Date();
  mockWf.historyLength = 3;
  answer('merge', () => ({ outcome: 'started', jobId: 'lm.d1.v2', kind: 'intermediate', chain: ['v2', 'v1', 'v0'] }));
  answer('waitForBlockJob', () => ({ outcome: 'concluded', offset: 7, len: 7, pivotRequested: false }));
  answer('verifyChain', () => ({ chain: ['v1', 'v0'] }));
  answer('deleteVolume', () => ({ deleted: true, path: '/x/v2.qcow2' }));
  answer('cleanup', () => ({ dismissedJob: true }));
});

const outcomeCounter = (): unknown[] =>
  mockWf.counters.filter((c) => c.name === 'live_merge_disk_merges').map((c) => c.tags.outcome);
const bytesCounter = (): number[] =>
  mockWf.counters.filter((c) => c.name === 'live_merge_bytes_committed').map((c) => c.value);

test('a merge runs merge, wait, verify, delete and cleanup, in that order, with the steps it names', async () => {
  await expect(DiskMergeWorkflow(input())).resolves.toEqual({
    diskId: 'd1',
    outcome: 'merged',
    commitKind: 'intermediate',
    chainBefore: ['v2', 'v1', 'v0'],
    chainAfter: ['v1', 'v0'],
    topDeleted: true,
    mode: 'live',
    activeVolumeId: 'v1',
  });
  expect(mockWf.calls).toEqual([
    {
      step: 'merge',
      args: { ...step, bandwidthBytesPerSec: 5, allowOffline: true },
      summary: 'commit v2 into v1 on d1: start or adopt the block job',
      taskQueue: 'live-merge-host-h1',
    },
    {
      step: 'waitForBlockJob',
      args: {
        ...jobStep,
        pollIntervalMs: 100,
        progressWorkflowId: 'parent',
        commitKind: 'intermediate',
        convergence: input().options.convergence,
      },
      summary: 'wait for block job lm.d1.v2 (intermediate commit)',
      taskQueue: 'live-merge-host-h1-jobs',
    },
    {
      step: 'verifyChain',
      args: step,
      summary: 'verify chain of d1: v2 gone, v1 present',
      taskQueue: 'live-merge-host-h1',
    },
    { step: 'deleteVolume', args: step, summary: 'delete volume v2 of d1', taskQueue: 'live-merge-host-h1' },
    { step: 'cleanup', args: jobStep, summary: 'clean up after block job lm.d1.v2', taskQueue: 'live-merge-host-h1' },
  ]);
  // The merge step alone has a pickup bound; the parent is told of the child's own phases only.
  expect(mockWf.options).toContainEqual({ ...mergeStepOptions(120), taskQueue: 'live-merge-host-h1' });
  expect(phases()).toEqual([]);
  expect(outcomeCounter()).toEqual(['merged']);
  expect(bytesCounter()).toEqual([7]);
  expect(mockWf.upserts).toEqual([
    ['VmId=vm1', 'HostId=h1', 'SnapshotId=s1', 'DiskId=d1'],
    ['MergeMode=live'],
    ['MergeMode=live', 'ActiveVolumes=d1=v1'],
    ['MergeOutcome=merged'],
  ]);
});

describe("on the host's queue (disk-on-host)", () => {
  beforeEach(() => {
    mockWf.taskQueue = 'live-merge-host-h1-jobs';
  });

  test('the short steps run locally and the wait on that same queue; the same steps, the same result', async () => {
    await expect(DiskMergeWorkflow(input())).resolves.toMatchObject({ outcome: 'merged', chainAfter: ['v1', 'v0'] });
    expect(mockWf.calls.map((c) => [c.step, c.taskQueue])).toEqual([
      ['merge', 'local'],
      ['waitForBlockJob', 'live-merge-host-h1-jobs'],
      ['verifyChain', 'local'],
      ['deleteVolume', 'local'],
      ['cleanup', 'local'],
    ]);
    expect(mockWf.options).toContainEqual({ ...localStepOptions, taskQueue: 'local' });
    // Not asked: a disk on the host's queue is new, whatever patch an older one would need.
    expect(mockWf.patchIds.has('job-wait-queue')).toBe(false);
  });

  test("a cancel cancels the job by a step on the host's steps queue (it waits on QEMU), then cleans up locally", async () => {
    answer('waitForBlockJob', () => {
      throw new CancelledFailure('cancelled');
    });
    await expect(DiskMergeWorkflow(input())).rejects.toBeInstanceOf(CancelledFailure);
    expect(mockWf.calls.slice(2).map((c) => [c.step, c.taskQueue])).toEqual([
      ['cancelBlockJob', 'live-merge-host-h1'],
      ['cleanup', 'local'],
    ]);
  });

  test('picked up after the pickup timeout: HostUnreachable, no merge step, its own leftovers cleaned', async () => {
    mockWf.startTime = new Date(Date.now() - 121_000);
    const failed = await failureOf(DiskMergeWorkflow(input()));
    expect([failed.type, failed.message]).toEqual([
      'HostUnreachable',
      'disk d1: host h1 picked up the merge after its pickup timeout (120 s): nothing was started; top volume v2 kept',
    ]);
    expect(steps()).toEqual(['cleanup']);
    expect(phases()).toEqual(['failed']);
  });

  test('a first task retried late (its agent died mid-step, picked up in time): the disk goes on', async () => {
    mockWf.startTime = new Date(Date.now() - 121_000);
    mockWf.historyLength = 6;
    await expect(DiskMergeWorkflow(input())).resolves.toMatchObject({ outcome: 'merged' });
  });

  test('picked up exactly at the pickup timeout: still in time, merged', async () => {
    const now = jest.spyOn(Date, 'now').mockReturnValue(1_000_000_000_000);
    try {
      mockWf.startTime = new Date(1_000_000_000_000 - 120_000);
      await expect(DiskMergeWorkflow(input())).resolves.toMatchObject({ outcome: 'merged' });
    } finally {
      now.mockRestore();
    }
  });

  test('picked up just within the pickup timeout: merged', async () => {
    mockWf.startTime = new Date(Date.now() - 119_000);
    await expect(DiskMergeWorkflow(input())).resolves.toMatchObject({ outcome: 'merged' });
  });
});

test('on the engine queue, a late first task is no pickup bound: the merge step has its own', async () => {
  mockWf.startTime = new Date(Date.now() - 3_600_000);
  await expect(DiskMergeWorkflow(input())).resolves.toMatchObject({ outcome: 'merged' });
});

test('an active commit is waited for with a pivot; before the patch the wait stays on the steps queue', async () => {
  mockWf.patched = false;
  answer('merge', () => ({ outcome: 'started', jobId: 'lm.d1.v2', kind: 'active', chain: ['v2', 'v1'] }));
  await DiskMergeWorkflow(input());
  const wait = mockWf.calls.find((c) => c.step === 'waitForBlockJob');
  expect(wait?.summary).toBe('wait for block job lm.d1.v2 (active commit, pivot when ready)');
  expect(wait?.taskQueue).toBe('live-merge-host-h1');
  // Old histories signalled every phase.
  expect(mockWf.signals).toEqual(
    [
      { phase: 'merging' },
      { phase: 'waiting', commitKind: 'active' },
      { phase: 'verifying' },
      { phase: 'deleting' },
      { phase: 'cleaning' },
      { phase: 'merged', commitKind: 'active' },
    ].map((p) => ({ to: 'parent', progress: { diskId: 'd1', ...p } })),
  );
  expect(mockWf.upserts).toEqual([]);
});

test('a top merged earlier: no wait, verify and delete, outcome alreadyMerged, no bytes counted', async () => {
  answer('merge', () => ({ outcome: 'alreadyMerged', jobId: 'lm.d1.v2', chain: ['v1', 'v0'] }));
  await expect(DiskMergeWorkflow(input())).resolves.toMatchObject({
    outcome: 'alreadyMerged',
    commitKind: undefined,
    chainBefore: ['v1', 'v0'],
  });
  expect(steps()).toEqual(['merge', 'verifyChain', 'deleteVolume', 'cleanup']);
  expect(outcomeCounter()).toEqual(['alreadyMerged']);
  expect(bytesCounter()).toEqual([]);
});

test('a job of ours adopted after it concluded (agent restarted mid-job) merged: outcome merged, bytes counted', async () => {
  answer('merge', () => ({ outcome: 'adopted', jobId: 'lm.d1.v2', kind: 'intermediate', chain: ['v1', 'v0'] }));
  await expect(DiskMergeWorkflow(input())).resolves.toMatchObject({ outcome: 'merged', commitKind: 'intermediate' });
  expect(steps()).toEqual(['merge', 'waitForBlockJob', 'verifyChain', 'deleteVolume', 'cleanup']);
  expect(outcomeCounter()).toEqual(['merged']);
  expect(bytesCounter()).toEqual([7]);
});

test('a block job that ended in error fails the disk as BlockJobFailed: no verify, no delete, job cleaned up', async () => {
  answer('waitForBlockJob', () => ({
    outcome: 'concluded',
    error: 'Input/output error',
    offset: 3,
    len: 7,
    pivotRequested: false,
  }));
  const f = await failureOf(DiskMergeWorkflow(input()));
  expect(f).toMatchObject({ type: 'BlockJobFailed', nonRetryable: true });
  expect(f.message).toBe('disk d1: block job lm.d1.v2 failed in QEMU: Input/output error; top volume v2 kept');
  expect(steps()).toEqual(['merge', 'waitForBlockJob', 'cleanup']);
  expect(mockWf.calls[2]).toMatchObject({ args: jobStep, summary: 'clean up after failed merge of d1, keep v2' });
  expect(mockWf.signals.at(-1)?.progress).toEqual({
    diskId: 'd1',
    phase: 'failed',
    reason: 'block job lm.d1.v2 failed in QEMU: Input/output error',
  });
  expect(outcomeCounter()).toEqual(['failed']);
  expect(bytesCounter()).toEqual([]);
  expect(mockWf.upserts.at(-1)).toEqual(['MergeOutcome=failed']);
});

test('a vanished job is not success: the chain check decides, and a failed check deletes nothing', async () => {
  answer('waitForBlockJob', () => ({ outcome: 'vanished', pivotRequested: false }));
  answer('verifyChain', () => {
    throw refused('ChainVerificationFailed', 'chain check failed on disk d1: top volume v2 is still in the chain');
  });
  const f = await failureOf(DiskMergeWorkflow(input()));
  expect(f.type).toBe('ChainVerificationFailed');
  expect(f.message).toMatch(/^disk d1: chain check failed .*; top volume v2 kept$/);
  expect(steps()).toEqual(['merge', 'waitForBlockJob', 'verifyChain', 'cleanup']);
  expect(bytesCounter()).toEqual([]);
});

test('a vanished job whose chain check passes is deleted, but counts no committed bytes', async () => {
  answer('waitForBlockJob', () => ({ outcome: 'vanished', pivotRequested: true }));
  await expect(DiskMergeWorkflow(input())).resolves.toMatchObject({ outcome: 'merged', topDeleted: true });
  expect(steps()).toEqual(['merge', 'waitForBlockJob', 'verifyChain', 'deleteVolume', 'cleanup']);
  expect(bytesCounter()).toEqual([]);
});

test.each(['VolumeNotInChain', 'BaseNotBacking', 'DiskBusy', 'InsufficientSpace', 'BaseShared', 'VolumeInUse'])(
  'a merge step refused with %s fails the disk with that type, nothing waited for or deleted',
  async (type) => {
    answer('merge', () => {
      throw refused(type, `refused: ${type}`);
    });
    const f = await failureOf(DiskMergeWorkflow(input()));
    expect(f).toMatchObject({ type, nonRetryable: true, message: `disk d1: refused: ${type}; top volume v2 kept` });
    expect(steps()).toEqual(['merge', 'cleanup']);
  },
);

test('a delete refused (volume still used) fails the disk with its type; cleanup still runs', async () => {
  answer('deleteVolume', () => {
    throw refused('VolumeInUse', 'volume v2 of disk d1 is still used');
  });
  const f = await failureOf(DiskMergeWorkflow(input()));
  expect(f.type).toBe('VolumeInUse');
  expect(steps()).toEqual(['merge', 'waitForBlockJob', 'verifyChain', 'deleteVolume', 'cleanup']);
});

test('a failure of no known type becomes DiskMergeFailed, with its message as the reason', async () => {
  answer('verifyChain', () => {
    throw new Error('something odd');
  });
  const f = await failureOf(DiskMergeWorkflow(input()));
  expect(f).toMatchObject({ type: 'DiskMergeFailed', message: 'disk d1: something odd; top volume v2 kept' });
});

test('a host that never picks up the merge: HostUnreachable, and no host step after it', async () => {
  answer('merge', () => {
    throw new ActivityFailure(
      'timeout',
      'merge',
      '1',
      RetryState.NON_RETRYABLE_FAILURE,
      'w',
      new TimeoutFailure('no pickup', undefined, TimeoutType.SCHEDULE_TO_START),
    );
  });
  const f = await failureOf(DiskMergeWorkflow(input()));
  expect(f.type).toBe('HostUnreachable');
  expect(f.message).toBe(
    'disk d1: host h1 did not pick up the merge within 120 s: no host agent polls live-merge-host-h1; top volume v2 kept',
  );
  expect(steps()).toEqual(['merge']);
});

test('a cancel while the job runs cancels the job, cleans up, deletes nothing, and ends cancelled', async () => {
  answer('waitForBlockJob', () => {
    throw new CancelledFailure('cancelled');
  });
  await expect(DiskMergeWorkflow(input())).rejects.toBeInstanceOf(CancelledFailure);
  expect(steps()).toEqual(['merge', 'waitForBlockJob', 'cancelBlockJob', 'cleanup']);
  expect(mockWf.calls.slice(2).map((c) => [c.args, c.summary])).toEqual([
    [jobStep, 'cancel block job lm.d1.v2: merge cancelled'],
    [jobStep, 'clean up after block job lm.d1.v2'],
  ]);
  expect(phases()).toEqual(['cancelling', 'cancelled']);
  expect(mockWf.signals[1].progress).toEqual({
    diskId: 'd1',
    phase: 'cancelled',
    reason: 'merge cancelled; block job cancelled, chain unchanged',
  });
  expect(outcomeCounter()).toEqual(['cancelled']);
  expect(mockWf.upserts.at(-1)).toEqual(['MergeOutcome=cancelled']);
});

test('bad input fails at once as InvalidMergeInput, before any host step', async () => {
  const bad = { ...input(), disk: { diskId: 'd1', baseVolumeId: 'v1', topVolumeId: 'v1' } };
  const f = await failureOf(DiskMergeWorkflow(bad));
  expect(f.type).toBe('InvalidMergeInput');
  expect(f.message).toMatch(/^invalid merge input: .*disk/);
  expect(steps()).toEqual([]);
});

test('the patches it asks about keep their ids: histories recorded before each change replay by them', async () => {
  await DiskMergeWorkflow(input());
  expect([...mockWf.patchIds].sort()).toEqual([
    'job-wait-queue',
    'lean-progress-signals',
    'merge-search-attributes',
    'offline-merge',
  ]);
});

test('without a parent nobody is signalled, not even of a failure', async () => {
  await DiskMergeWorkflow(input({ parentWorkflowId: undefined }));
  answer('verifyChain', () => {
    throw refused('ChainVerificationFailed', 'top still in chain');
  });
  await failureOf(DiskMergeWorkflow(input({ parentWorkflowId: undefined })));
  expect(mockWf.signals).toEqual([]);
});

test('a parent that is gone does not fail the merge', async () => {
  await expect(DiskMergeWorkflow(input({ parentWorkflowId: 'gone-parent' }))).resolves.toMatchObject({
    outcome: 'merged',
  });
  answer('verifyChain', () => {
    throw refused('ChainVerificationFailed', 'top still in chain');
  });
  await expect(failureOf(DiskMergeWorkflow(input({ parentWorkflowId: 'gone-parent' })))).resolves.toMatchObject({
    type: 'ChainVerificationFailed',
  });
  expect(phases()).toEqual(['failed']);
});

describe('a VM that does not run: the offline steps', () => {
  const offline = (kind?: 'active' | 'intermediate') => () => ({
    outcome: 'offline',
    jobId: 'lm.d1.v2',
    ...(kind === undefined ? {} : { kind }),
    chain: ['v2', 'v1'],
    definition: 'caller',
  });
  beforeEach(() => {
    answer('offlineCommit', () => ({ committed: true, bytes: 9 }));
    answer('offlineRelink', () => ({ relinked: 'caller', changed: false }));
    answer('verifyChain', () => ({ chain: ['v1'] }));
  });

  test('commit, relink, verify and delete what the stopped VM opens; the result names its volume', async () => {
    answer('merge', offline('active'));
    await expect(DiskMergeWorkflow(input())).resolves.toEqual({
      diskId: 'd1',
      outcome: 'merged',
      commitKind: 'active',
      chainBefore: ['v2', 'v1'],
      chainAfter: ['v1'],
      topDeleted: true,
      mode: 'offline',
      activeVolumeId: 'v1',
    });
    expect(mockWf.calls.map((c) => [c.step, c.args, c.summary, c.taskQueue])).toEqual([
      [
        'merge',
        { ...step, bandwidthBytesPerSec: 5, allowOffline: true },
        'commit v2 into v1 on d1: start or adopt the block job',
        'live-merge-host-h1',
      ],
      [
        'offlineCommit',
        { ...step, kind: 'active', bandwidthBytesPerSec: 5, progressWorkflowId: 'parent' },
        'commit v2 into v1 on d1 offline (qemu-img)',
        'live-merge-host-h1',
      ],
      [
        'offlineRelink',
        { ...step, kind: 'active' },
        "point d1 at v1 (the VM's definition, or the result for its caller)",
        'live-merge-host-h1',
      ],
      [
        'verifyChain',
        { ...step, offline: true },
        'verify the chain d1 opens: v2 gone, v1 present',
        'live-merge-host-h1',
      ],
      ['deleteVolume', { ...step, offline: true }, 'delete volume v2 of d1', 'live-merge-host-h1'],
    ]);
    expect(mockWf.options).toContainEqual({ ...offlineCommitOptions, taskQueue: 'live-merge-host-h1' });
    expect(mockWf.options).toContainEqual({ ...hostStepOptions, taskQueue: 'live-merge-host-h1' });
    expect(mockWf.signals[1].progress).toEqual({
      diskId: 'd1',
      phase: 'relinking',
      commitKind: 'active',
      mode: 'offline',
    });
    expect(phases()).toEqual(['committing', 'relinking']);
    expect(mockWf.signals[0].progress).toEqual({
      diskId: 'd1',
      phase: 'committing',
      commitKind: 'active',
      mode: 'offline',
    });
    expect(outcomeCounter()).toEqual(['merged']);
    expect(bytesCounter()).toEqual([9]);
    expect(mockWf.upserts).toEqual([
      ['VmId=vm1', 'HostId=h1', 'SnapshotId=s1', 'DiskId=d1'],
      ['MergeMode=offline'],
      ['MergeMode=offline', 'ActiveVolumes=d1=v1'],
      ['MergeOutcome=merged'],
    ]);
  });

  test('a top committed earlier (no kind): verify and delete only, outcome alreadyMerged', async () => {
    answer('merge', offline());
    await expect(DiskMergeWorkflow(input())).resolves.toStrictEqual({
      diskId: 'd1',
      outcome: 'alreadyMerged',
      chainBefore: ['v2', 'v1'],
      chainAfter: ['v1'],
      topDeleted: true,
      mode: 'offline',
      activeVolumeId: 'v1',
    });
    expect(steps()).toEqual(['merge', 'verifyChain', 'deleteVolume']);
    expect(phases()).toEqual([]);
  });

  test('a refused relink (the VM started): the disk fails with its type, cleans up once, deletes nothing', async () => {
    answer('merge', offline('intermediate'));
    answer('offlineRelink', (args) => {
      expect(mockWf.calls.at(-1)?.summary).toBe('rebase the layer above v2 onto v1');
      expect(args).toEqual({ ...step, kind: 'intermediate' });
      throw refused('VmStarted', 'VM vm1 started');
    });
    const f = await failureOf(DiskMergeWorkflow(input()));
    expect(f).toMatchObject({ type: 'VmStarted' });
    expect(f.message).toMatch(/top volume v2 kept/);
    expect(steps()).toEqual(['merge', 'offlineCommit', 'offlineRelink', 'cleanup']);
    expect(phases()).toEqual(['committing', 'relinking', 'failed']);
  });

  test('a refused commit: the disk fails with its type, cleans up, relinks and deletes nothing', async () => {
    answer('merge', offline('intermediate'));
    answer('offlineCommit', () => {
      throw refused('VolumeInUse', 'top volume v2 of disk d1 is used outside its chain');
    });
    const f = await failureOf(DiskMergeWorkflow(input()));
    expect(f).toMatchObject({ type: 'VolumeInUse' });
    expect(steps()).toEqual(['merge', 'offlineCommit', 'cleanup']);
    expect(phases()).toEqual(['committing', 'failed']);
    expect(outcomeCounter()).toEqual(['failed']);
  });

  test('without a parent the commit is asked for no progress signals', async () => {
    answer('merge', offline('active'));
    await DiskMergeWorkflow(input({ parentWorkflowId: undefined }));
    expect(mockWf.calls[1].args).toStrictEqual({ ...step, kind: 'active', bandwidthBytesPerSec: 5 });
  });

  test('a cancel during the commit: reported cancelled, nothing relinked or deleted', async () => {
    answer('merge', offline('intermediate'));
    answer('offlineCommit', () => {
      throw new CancelledFailure('cancelled');
    });
    await expect(DiskMergeWorkflow(input())).rejects.toBeInstanceOf(CancelledFailure);
    expect(steps()).toEqual(['merge', 'offlineCommit']);
    expect(phases()).toEqual(['committing', 'cancelled']);
    expect(mockWf.signals.at(-1)?.progress).toEqual({
      diskId: 'd1',
      phase: 'cancelled',
      reason: 'merge cancelled; the offline commit was stopped, the chain is readable',
    });
    expect(outcomeCounter()).toEqual(['cancelled']);
  });

  test('before the patch the merge step is not offered the offline path', async () => {
    mockWf.patched = false;
    await DiskMergeWorkflow(input());
    expect(mockWf.calls[0].args).toEqual({ ...step, bandwidthBytesPerSec: 5 });
  });
});

describe('a VM that stops mid-merge: the disk is finished offline', () => {
  const stopped = refused('VmGone', 'VM vm1 is gone: its QEMU no longer answers on /run/vm1/qmp.sock (closed)');
  /** The first merge step starts the job; the second, after the stop, reads what the VM left. */
  const mergeThenOffline = (second: Record<string, unknown>): void => {
    let n = 0;
    answer('merge', () =>
      n++ === 0
        ? { outcome: 'started', jobId: 'lm.d1.v2', kind: 'active', chain: ['v2', 'v1'] }
        : {
            outcome: 'offline',
            jobId: 'lm.d1.v2',
            kind: 'active',
            chain: ['v2', 'v1'],
            definition: 'caller',
            ...second,
          },
    );
  };
  beforeEach(() => {
    answer('offlineCommit', () => ({ committed: true, bytes: 9 }));
    answer('offlineRelink', () => ({ relinked: 'caller', changed: false }));
  });

  test('stopped before the pivot: the top is committed offline, the result names the base and says so', async () => {
    mergeThenOffline({});
    answer('waitForBlockJob', () => {
      throw stopped;
    });
    answer('verifyChain', () => ({ chain: ['v1'] }));
    await expect(DiskMergeWorkflow(input())).resolves.toEqual({
      diskId: 'd1',
      outcome: 'merged',
      commitKind: 'active',
      chainBefore: ['v2', 'v1'],
      chainAfter: ['v1'],
      topDeleted: true,
      mode: 'offline',
      activeVolumeId: 'v1',
      stoppedMidMerge: { topStale: false },
    });
    expect(mockWf.calls.map((c) => [c.step, c.args])).toEqual([
      ['merge', { ...step, bandwidthBytesPerSec: 5, allowOffline: true }],
      ['waitForBlockJob', expect.objectContaining(jobStep)],
      ['merge', { ...step, bandwidthBytesPerSec: 5, allowOffline: true, offlineOnly: true, liveActive: 'v2' }],
      ['offlineCommit', { ...step, kind: 'active', bandwidthBytesPerSec: 5, progressWorkflowId: 'parent' }],
      ['offlineRelink', { ...step, kind: 'active' }],
      ['verifyChain', { ...step, offline: true }],
      ['deleteVolume', { ...step, offline: true }],
    ]);
    expect(mockWf.calls[2].summary).toBe(
      'VM vm1 stopped mid-merge (VM vm1 is gone: its QEMU no longer answers on /run/vm1/qmp.sock (closed)): finish d1 offline',
    );
    // The parent shows the merged phase, with the same fields, from the result.
    expect(phases()).toEqual(['committing', 'relinking']);
    expect(mockWf.patchIds).toContain('stopped-mid-merge');
    expect(outcomeCounter()).toEqual(['merged']);
  });

  test('stopped right after the pivot: the stale top is not committed, only taken out and deleted', async () => {
    mergeThenOffline({ pivoted: true });
    answer('waitForBlockJob', () => ({ outcome: 'concluded', offset: 7, len: 7, pivotRequested: true }));
    let verified = 0;
    answer('verifyChain', () => {
      if (verified++ === 0) throw refused('VmNotFound', 'VM vm1 does not run here');
      return { chain: ['v1'] };
    });
    const merged = await DiskMergeWorkflow(input());
    expect(merged).toMatchObject({ outcome: 'merged', activeVolumeId: 'v1', stoppedMidMerge: { topStale: true } });
    expect(steps()).toEqual([
      'merge',
      'waitForBlockJob',
      'verifyChain',
      'merge',
      'offlineRelink',
      'verifyChain',
      'deleteVolume',
    ]);
    expect(mockWf.upserts.at(-2)).toEqual(['MergeMode=offline', 'ActiveVolumes=d1=v1']);
  });

  test("stopped after the pivot whose definition names the base already (libvirt's): merged, with the live job's kind and chain", async () => {
    let n = 0;
    answer('merge', () =>
      n++ === 0
        ? { outcome: 'started', jobId: 'lm.d1.v2', kind: 'active', chain: ['v2', 'v1', 'v0'] }
        : { outcome: 'offline', jobId: 'lm.d1.v2', chain: ['v1', 'v0'], definition: 'hypervisor' },
    );
    answer('waitForBlockJob', () => {
      throw stopped;
    });
    answer('verifyChain', () => ({ chain: ['v1', 'v0'] }));
    expect(await DiskMergeWorkflow(input())).toMatchObject({
      outcome: 'merged',
      commitKind: 'active',
      chainBefore: ['v2', 'v1', 'v0'],
      chainAfter: ['v1', 'v0'],
      activeVolumeId: 'v1',
      stoppedMidMerge: { topStale: true },
    });
    expect(steps()).toEqual(['merge', 'waitForBlockJob', 'merge', 'verifyChain', 'deleteVolume']);
  });

  test('stopped at the first step, before any job: a top merged earlier is alreadyMerged, the offline chain its chainBefore', async () => {
    let n = 0;
    answer('merge', () => {
      if (n++ === 0) throw stopped;
      return { outcome: 'offline', jobId: 'lm.d1.v2', chain: ['v1', 'v0'], definition: 'caller' };
    });
    answer('verifyChain', () => ({ chain: ['v1', 'v0'] }));
    const merged = await DiskMergeWorkflow(input());
    expect(merged).toMatchObject({
      outcome: 'alreadyMerged',
      chainBefore: ['v1', 'v0'],
      stoppedMidMerge: { topStale: false },
    });
    expect(merged.commitKind).toBeUndefined();
    expect(steps()).toEqual(['merge', 'merge', 'verifyChain', 'deleteVolume']);
    // No live chain was read: the host walks the chain from the base.
    expect(mockWf.calls[1].args).toEqual({ ...step, bandwidthBytesPerSec: 5, allowOffline: true, offlineOnly: true });
  });

  test('a live chain that starts outside the disk (no volume id) is not passed on as where the VM ran from', async () => {
    let n = 0;
    answer('merge', () =>
      n++ === 0
        ? { outcome: 'started', jobId: 'lm.d1.v2', kind: 'intermediate', chain: ['/elsewhere/x.qcow2', 'v2', 'v1'] }
        : { outcome: 'offline', jobId: 'lm.d1.v2', chain: ['v1'], definition: 'caller' },
    );
    answer('waitForBlockJob', () => {
      throw stopped;
    });
    answer('verifyChain', () => ({ chain: ['v1'] }));
    await DiskMergeWorkflow(input());
    expect(mockWf.calls[2].args).toEqual({ ...step, bandwidthBytesPerSec: 5, allowOffline: true, offlineOnly: true });
  });

  test('a pivot of unknown outcome: the disk fails with PivotOutcomeUnknown, nothing is deleted', async () => {
    let n = 0;
    answer('merge', () => {
      if (n++ === 0) return { outcome: 'started', jobId: 'lm.d1.v2', kind: 'active', chain: ['v2', 'v1'] };
      throw refused('PivotOutcomeUnknown', 'disk d1: the VM stopped between the pivot request and ...');
    });
    answer('waitForBlockJob', () => {
      throw stopped;
    });
    const f = await failureOf(DiskMergeWorkflow(input()));
    expect(f.type).toBe('PivotOutcomeUnknown');
    expect(f.message).toBe('disk d1: disk d1: the VM stopped between the pivot request and ...; top volume v2 kept');
    expect(steps()).toEqual(['merge', 'waitForBlockJob', 'merge', 'cleanup']);
    expect(phases().at(-1)).toBe('failed');
  });

  test('a VM that runs again before the finish: VmStarted, the top kept', async () => {
    let n = 0;
    answer('merge', () => ({
      outcome: n++ === 0 ? 'started' : 'adopted',
      jobId: 'lm.d1.v2',
      kind: 'active',
      chain: ['v2', 'v1'],
    }));
    answer('waitForBlockJob', () => {
      throw stopped;
    });
    const f = await failureOf(DiskMergeWorkflow(input()));
    expect([f.type, f.message]).toEqual(['VmStarted', 'disk d1: VM vm1 runs again; top volume v2 kept']);
    expect(steps()).toEqual(['merge', 'waitForBlockJob', 'merge', 'cleanup']);
  });

  test('a failure that is not a stop fails the disk as before, with no second merge step', async () => {
    answer('waitForBlockJob', () => {
      throw refused('DiskNotFound', 'no disk d1');
    });
    await expect(failureOf(DiskMergeWorkflow(input()))).resolves.toMatchObject({ type: 'DiskNotFound' });
    expect(steps()).toEqual(['merge', 'waitForBlockJob', 'cleanup']);
  });

  test.each(['stopped-mid-merge', 'offline-merge'])(
    'a merge recorded before %s fails the disk as VmGone, as it did',
    async (patch) => {
      mockWf.unpatched.add(patch);
      answer('waitForBlockJob', () => {
        throw stopped;
      });
      await expect(failureOf(DiskMergeWorkflow(input()))).resolves.toMatchObject({ type: 'VmGone' });
      expect(steps()).toEqual(['merge', 'waitForBlockJob', 'cleanup']);
    },
  );

  test('a cancel that ends the wait is a cancel, not a stop: the job is cancelled, nothing merged offline', async () => {
    answer('waitForBlockJob', () => {
      throw new CancelledFailure('cancelled');
    });
    await expect(DiskMergeWorkflow(input())).rejects.toBeInstanceOf(CancelledFailure);
    expect(steps()).toEqual(['merge', 'waitForBlockJob', 'cancelBlockJob', 'cleanup']);
  });
});

describe('the adaptive speed', () => {
  const adaptiveInput = (): DiskMergeInput => input({ options: { ...input().options, bandwidthBytesPerSec: 0 } });
  const argsOf = (name: Step): unknown => mockWf.calls.find((c) => c.step === name)?.args;
  const speedStart = {
    io: { readOps: 0, readNs: 0, writeOps: 9, writeNs: 9e6, flushOps: 0, flushNs: 0 },
    at: 1,
    bytesPerSec: 16 * 1024 * 1024,
  };

  test('the merge step is told; the wait gets the factor and the start the merge step saw', async () => {
    answer('merge', () => ({ outcome: 'started', jobId: 'lm.d1.v2', kind: 'active', chain: ['v2', 'v1'], speedStart }));
    await DiskMergeWorkflow(adaptiveInput());
    expect(argsOf('merge')).toMatchObject({ adaptive: true, bandwidthBytesPerSec: 0 });
    expect(argsOf('waitForBlockJob')).toMatchObject({ speed: { latencyFactor: 2, start: speedStart } });
    expect(mockWf.patchIds).toContain('adaptive-speed');
  });

  test('an adopted job: the wait gets the factor only, and reads the counters itself', async () => {
    answer('merge', () => ({ outcome: 'adopted', jobId: 'lm.d1.v2', kind: 'active', chain: ['v2', 'v1'] }));
    await DiskMergeWorkflow(adaptiveInput());
    expect((argsOf('waitForBlockJob') as { speed?: unknown }).speed).toStrictEqual({ latencyFactor: 2 });
  });

  test('a merge recorded before the adaptive mode, and the fixed mode: neither step is told', async () => {
    mockWf.unpatched.add('adaptive-speed');
    await DiskMergeWorkflow(adaptiveInput());
    expect(argsOf('merge')).not.toHaveProperty('adaptive');
    expect(argsOf('waitForBlockJob')).not.toHaveProperty('speed');
    mockWf.calls = [];
    mockWf.unpatched.clear();
    await DiskMergeWorkflow(input());
    expect(argsOf('merge')).not.toHaveProperty('adaptive');
    expect(argsOf('waitForBlockJob')).not.toHaveProperty('speed');
  });
});

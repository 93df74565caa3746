import { Writable } from 'node:stream';

import type { DiskProgress, MergeProgress } from '../../src/domain/progress';
import { createProgressView, renderDiskLine } from '../../src/progress/view';

const MiB = 1024 * 1024;

function fakeStream(isTTY: boolean): { stream: NodeJS.WriteStream; output: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  }) as unknown as NodeJS.WriteStream;
  Object.assign(stream, { isTTY, columns: 120 });
  return { stream, output: () => text };
}

function progress(...disks: DiskProgress[]): MergeProgress {
  return { snapshotId: 's1', vmId: 'vm1', hostId: 'host1', disks };
}

test("a running job's line shows its speed and, adaptive, the guest's latency against its target", () => {
  const job = {
    diskId: 'disk0',
    phase: 'waiting' as const,
    commitKind: 'active' as const,
    offset: 76.8 * MiB,
    len: 192 * MiB,
  };
  expect(
    renderDiskLine({
      ...job,
      speed: { mode: 'adaptive', bytesPerSec: 36 * MiB, guestLatencyMs: 0.306, targetLatencyMs: 0.4 },
    }),
  ).toBe('disk0: waiting active commit 40% 76.8/192.0 MiB, adaptive 36.0 MiB/s, guest 0.31/0.40 ms');
  expect(renderDiskLine({ ...job, speed: { mode: 'adaptive', bytesPerSec: 0 } })).toBe(
    'disk0: waiting active commit 40% 76.8/192.0 MiB, adaptive unlimited',
  );
  expect(renderDiskLine({ ...job, speed: { mode: 'fixed', bytesPerSec: 2 * MiB } })).toBe(
    'disk0: waiting active commit 40% 76.8/192.0 MiB, fixed 2.0 MiB/s',
  );
  expect(renderDiskLine({ ...job, phase: 'merged', speed: { mode: 'fixed', bytesPerSec: 0 } })).toBe(
    'disk0: merged active commit 40% 76.8/192.0 MiB',
  );
});

test('a disk line names phase, commit kind, percent and MiB, and a failure its reason', () => {
  expect(
    renderDiskLine({ diskId: 'disk0', phase: 'waiting', commitKind: 'intermediate', offset: 12 * MiB, len: 48 * MiB }),
  ).toBe('disk0: waiting intermediate commit 25% 12.0/48.0 MiB');
  expect(renderDiskLine({ diskId: 'disk1', phase: 'pending' })).toBe('disk1: pending');
  expect(renderDiskLine({ diskId: 'disk1', phase: 'failed', reason: 'VolumeNotInChain' })).toBe(
    'disk1: failed: VolumeNotInChain',
  );
});

test('not a terminal: plain lines, one per disk on a phase change or another 10 %, none for the same state', () => {
  const { stream, output } = fakeStream(false);
  const view = createProgressView(stream);
  const len = 100 * MiB;
  view.update(progress({ diskId: 'disk0', phase: 'merging' }, { diskId: 'disk1', phase: 'pending' }));
  view.update(progress({ diskId: 'disk0', phase: 'merging' }, { diskId: 'disk1', phase: 'pending' }));
  for (const pct of [1, 3, 9, 12, 15, 55]) {
    view.update(
      progress(
        { diskId: 'disk0', phase: 'waiting', jobStatus: 'running', commitKind: 'active', offset: pct * MiB, len },
        { diskId: 'disk1', phase: 'pending' },
      ),
    );
  }
  view.update(
    progress(
      { diskId: 'disk0', phase: 'merged', commitKind: 'active', offset: len, len },
      { diskId: 'disk1', phase: 'failed', reason: 'DiskBusy' },
    ),
  );
  view.stop();
  expect(output().split('\n').filter(Boolean)).toEqual([
    'disk0: merging',
    'disk1: pending',
    'disk0: waiting active commit 1% 1.0/100.0 MiB',
    'disk0: waiting active commit 12% 12.0/100.0 MiB',
    'disk0: waiting active commit 55% 55.0/100.0 MiB',
    'disk0: merged active commit 100% 100.0/100.0 MiB',
    'disk1: failed: DiskBusy',
  ]);
  // No terminal control sequences in a log.
  // eslint-disable-next-line no-control-regex -- terminal escapes are what this checks
  expect(output()).not.toMatch(/\x1b\[/);
});

test('a terminal: one cli-progress bar per disk, drawn in place, full when merged', () => {
  const { stream, output } = fakeStream(true);
  const view = createProgressView(stream);
  const len = 40 * MiB;
  view.update(
    progress(
      { diskId: 'disk0', phase: 'waiting', commitKind: 'intermediate', offset: 10 * MiB, len },
      { diskId: 'disk1', phase: 'merging' },
    ),
  );
  view.update(
    progress(
      { diskId: 'disk0', phase: 'merged', commitKind: 'intermediate', offset: len, len },
      { diskId: 'disk1', phase: 'failed', reason: 'BlockJobFailed' },
    ),
  );
  view.stop();
  const text = output();
  // eslint-disable-next-line no-control-regex -- terminal escapes are what this checks
  expect(text).toMatch(/\x1b\[/); // drawn in place with cursor movements
  expect(text).toMatch(/disk0 \[█+\] 100% 40\.0\/40\.0 MiB {2}merged \(intermediate commit\)/);
  expect(text).toMatch(/disk1 \[░+\] +0% 0\.0\/0\.0 MiB {2}failed/);
  expect(text).toContain('disk1: failed: BlockJobFailed');
});

test('a job that does not converge says so, with what is left and since when; a lifted limit too', () => {
  const stalled: DiskProgress = {
    diskId: 'disk1',
    phase: 'waiting',
    commitKind: 'active',
    offset: 7 * MiB,
    len: 57 * MiB,
    converging: false,
    remainingBytes: 50 * MiB,
    notConvergingSince: '2026-11-30T22:31:05.120Z',
  };
  expect(renderDiskLine(stalled)).toBe(
    'disk1: waiting active commit 12% 7.0/57.0 MiB NOT CONVERGING since 22:31:05Z, 50.0 MiB left',
  );
  expect(renderDiskLine({ ...stalled, speedLiftedAt: '2026-11-30T22:32:05.000Z' })).toContain(
    'NOT CONVERGING since 22:31:05Z, 50.0 MiB left, speed limit lifted 22:32:05Z',
  );
  expect(
    renderDiskLine({
      ...stalled,
      converging: true,
      notConvergingSince: undefined,
      speedLiftedAt: '2026-11-30T22:32:05.000Z',
    }),
  ).toBe('disk1: waiting active commit 12% 7.0/57.0 MiB, speed limit lifted 22:32:05Z');
  // Lines: a new line when the job stops converging, not for each change of the bytes left.
  const { stream, output } = fakeStream(false);
  const view = createProgressView(stream);
  view.update(progress({ ...stalled, converging: true, notConvergingSince: undefined }));
  view.update(progress(stalled));
  view.update(progress({ ...stalled, remainingBytes: 51 * MiB }));
  view.stop();
  expect(output().split('\n').filter(Boolean)).toHaveLength(2);
});

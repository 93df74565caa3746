import {
  childSignals,
  DISK_PHASES,
  type DiskPhase,
  isFinal,
  isForward,
  jobState,
  phaseOfJob,
} from '../../src/domain/phases';

const PHASES = Object.keys(DISK_PHASES) as DiskPhase[];

test('the phases keep the rank recorded histories were made with', () => {
  // LiveMergeWorkflow's order before the phases were written down once: replays depend on it. The
  // offline phases came later, between the job's and the check's: no recorded history has them.
  expect(PHASES).toEqual([
    'pending', 'merging', 'waiting', 'pivoting', 'committing', 'relinking', 'verifying', 'deleting', 'cleaning',
    'cancelling', 'merged', 'alreadyMerged', 'failed', 'cancelled',
  ]); // prettier-ignore
});

test('DiskMergeWorkflow signals the phases it signalled under the lean-progress-signals patch, and the offline ones', () => {
  expect(PHASES.filter(childSignals)).toEqual(['committing', 'relinking', 'cancelling', 'failed', 'cancelled']);
});

test.each(PHASES)('%s: every next phase exists and lies ahead', (phase) => {
  for (const next of DISK_PHASES[phase].next) {
    expect(PHASES).toContain(next);
    expect(isForward(phase, next as DiskPhase)).toBe(true);
    expect(isForward(next as DiskPhase, phase)).toBe(false);
  }
});

test('every phase is reached from pending, and every path ends in a final phase', () => {
  const seen = new Set<DiskPhase>(['pending']);
  const todo: DiskPhase[] = ['pending'];
  while (todo.length > 0) {
    for (const next of DISK_PHASES[todo.pop()!].next as readonly DiskPhase[]) {
      if (seen.has(next)) continue;
      seen.add(next);
      todo.push(next);
    }
  }
  expect([...seen].sort()).toEqual([...PHASES].sort());
  expect(PHASES.filter(isFinal)).toEqual(['merged', 'alreadyMerged', 'failed', 'cancelled']);
});

test('a new speed limit reaches a job only in the phases where it runs', () => {
  expect(PHASES.filter((p) => jobState(p) === 'running')).toEqual(['waiting', 'pivoting']);
  expect(PHASES.filter((p) => jobState(p) === 'notStarted')).toEqual(['pending', 'merging']);
});

test.each([
  ['running', undefined, 'waiting'],
  ['ready', undefined, 'pivoting'],
  ['concluded', undefined, 'verifying'],
  ['concluded', 'Input/output error', 'waiting'],
  ['pending', undefined, 'waiting'],
] as const)('a job in %s (error %s) is reported as %s', (status, error, phase) => {
  expect(phaseOfJob(status, error)).toBe(phase);
});

import { readFileSync } from 'node:fs';
import * as path from 'node:path';

import { hostStepOptions } from '../../src/config/policy';
import { failure, FAILURES, type FailureType, NON_RETRYABLE_TYPES } from '../../src/domain/failures';
import { DISK_PHASES } from '../../src/domain/phases';

const DOC = readFileSync(path.resolve(__dirname, '../../docs/failure-semantics.md'), 'utf8');

/** The rows of the docs/failure-semantics.md table under `heading`, as arrays of cells without backticks. */
function tableRows(heading: string): string[][] {
  expect(DOC).toContain(heading);
  const section = DOC.slice(DOC.indexOf(heading));
  const table = section.slice(section.indexOf('\n|'), section.indexOf('\n\n', section.indexOf('\n|')));
  return table
    .trim()
    .split('\n')
    .slice(2)
    .map((line) =>
      line
        .split('|')
        .slice(1, -1)
        .map((cell) => cell.trim().replace(/`/g, '')),
    );
}

test('docs/failure-semantics.md "Failure types" lists every failure type of the code, with its retry and meaning', () => {
  const rows = tableRows('\n## Failure types');
  const documented = rows.map(([type, retried, meaning]) => ({ type, retried, meaning }));
  const code = (Object.keys(FAILURES) as FailureType[]).map((type) => ({
    type,
    retried: FAILURES[type].retryable ? 'yes' : 'no',
    meaning: FAILURES[type].meaning,
  }));
  expect(documented).toEqual(code);
});

test('the retry policies refuse to retry exactly the non-retryable types', () => {
  expect(new Set(hostStepOptions.retry?.nonRetryableErrorTypes)).toEqual(
    new Set((Object.keys(FAILURES) as FailureType[]).filter((t) => !FAILURES[t].retryable)),
  );
  expect(NON_RETRYABLE_TYPES).toContain('VolumeInUse');
  expect(NON_RETRYABLE_TYPES).not.toContain('QmpTimeoutError');
});

test('failure() raises a non-retryable failure of the named type, with its details', () => {
  const f = failure('VolumeInUse', 'volume v1 is still in the chain', { chain: ['v1'] });
  expect(f.type).toBe('VolumeInUse');
  expect(f.nonRetryable).toBe(true);
  expect(f.message).toBe('volume v1 is still in the chain');
  expect(f.details).toEqual([{ chain: ['v1'] }]);
  expect(failure('BlockJobFailed', 'x').details).toEqual([]);
});

test('docs/failure-semantics.md "Disk phases" names every phase of the code, once', () => {
  const named = tableRows('\n## Disk phases').flatMap(([phases]) => phases.split(',').map((p) => p.trim()));
  expect(named.sort()).toEqual(Object.keys(DISK_PHASES).sort());
});

/**
 * Recorded histories replay on today's workflow code: merges recorded before the convergence
 * watch (test/fixtures/histories, recorded by test/harness/record-histories.ts with the code of
 * commit d02baa5), and one whose VM stopped mid-merge recorded before the stopped-mid-merge path
 * (`vmgone-d2771de`, `--vm-stops`: disk1 failed with VmGone), and one recorded just before the
 * disks' workflows moved to their hosts' queues (`before-host-2566bcb`: children on the engine,
 * every step an activity), must run on after a deploy exactly as they ran. A nondeterminism fails here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { temporal as proto } from '@temporalio/proto';
import { DefaultLogger, Runtime, Worker } from '@temporalio/worker';

import { workflowBundle } from '../harness/temporal';

const DIR = path.resolve(__dirname, '../fixtures/histories');
const files = readdirSync(DIR).filter((f) => f.endsWith('.history.pb'));

beforeAll(() => {
  try {
    Runtime.install({ logger: new DefaultLogger('WARN') });
  } catch {
    // installed already by another test file in this worker
  }
});

test('there are recorded histories', () => {
  expect(files.length).toBeGreaterThanOrEqual(3);
});

test.each(files)('%s replays', async (file) => {
  const history = proto.api.history.v1.History.decode(readFileSync(path.join(DIR, file)));
  const workflowId = file.split('.').slice(1, -2).join('.');
  await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, workflowId);
});

import type { Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import { dropUnpickedDisks } from '../../src/activities/pickup';

/**
 * The engine's pickup check (activities/pickup.ts) against a fake server: which disk workflows it
 * ends and reports as never picked up, and which it leaves alone.
 */

interface FakeWorkflow {
  /** Whether a workflow task of it ever started (a host agent picked it up). */
  pickedUp: boolean;
  status: string;
}

function fakeClient(workflows: Record<string, FakeWorkflow>, terminated: Array<[string, string]>): Client {
  const handle = (id: string) => ({
    fetchHistory: async () => ({
      events: [
        { workflowExecutionStartedEventAttributes: {} },
        { workflowTaskScheduledEventAttributes: {} },
        ...(workflows[id].pickedUp ? [{ workflowTaskStartedEventAttributes: {} }] : []),
      ],
    }),
    describe: async () => ({ status: { name: workflows[id].status } }),
    terminate: async (reason: string) => {
      terminated.push([id, reason]);
      workflows[id].status = 'TERMINATED';
    },
  });
  const client = { workflow: { getHandle: handle }, withAbortSignal: <R>(_s: unknown, fn: () => R): R => fn() };
  return client as unknown as Client;
}

function check(workflows: Record<string, FakeWorkflow>, input: unknown) {
  const terminated: Array<[string, string]> = [];
  const env = new MockActivityEnvironment(
    {},
    { logger: new DefaultLogger('ERROR'), client: fakeClient(workflows, terminated) },
  );
  return { terminated, result: env.run(dropUnpickedDisks, input as never) };
}

test('a disk no agent picked up is terminated with the reason and reported; a picked-up one is left alone', async () => {
  const workflows = {
    a: { pickedUp: false, status: 'RUNNING' },
    b: { pickedUp: true, status: 'RUNNING' },
  };
  const { terminated, result } = check(workflows, { workflowIds: ['a', 'b'], reason: 'no agent' });
  await expect(result).resolves.toEqual(['a']);
  expect(terminated).toEqual([['a', 'no agent']]);
});

test('run again after it terminated one (a retried step): reported again, not terminated twice', async () => {
  const workflows = { a: { pickedUp: false, status: 'TERMINATED' } };
  const { terminated, result } = check(workflows, { workflowIds: ['a'], reason: 'no agent' });
  await expect(result).resolves.toEqual(['a']);
  expect(terminated).toEqual([]);
});

test('a disk workflow that ended some other way without a task (a user cancelled it): not reported', async () => {
  const workflows = { a: { pickedUp: false, status: 'CANCELLED' } };
  const { terminated, result } = check(workflows, { workflowIds: ['a'], reason: 'no agent' });
  await expect(result).resolves.toEqual([]);
  expect(terminated).toEqual([]);
});

test('a bad input is refused at once, naming the field, and nothing is asked of the server', async () => {
  const { terminated, result } = check({}, { workflowIds: [], reason: 'no agent' });
  const err = await result.catch((e: unknown) => e);
  expect(err).toBeInstanceOf(ApplicationFailure);
  expect((err as ApplicationFailure).type).toBe('InvalidMergeInput');
  expect((err as ApplicationFailure).message).toMatch(/workflowIds/);
  expect(terminated).toEqual([]);
  await expect(check({}, { workflowIds: ['a'], reason: '' }).result).rejects.toThrow(/reason/);
});

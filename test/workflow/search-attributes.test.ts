import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { temporal } from '@temporalio/proto';
import type { Worker } from '@temporalio/worker';

import { temporalBin } from '../../lab/devserver/temporal-bin';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import { MERGE_SEARCH_ATTRIBUTES, searchAttributeCreateArgs, VM_ID } from '../../src/config/search-attributes';
import { createEngineWorker } from '../../src/workers/engine';
import { missingSearchAttributes } from '../../src/workers/search-attributes-check';
import { LiveMergeWorkflow } from '../../src/workflows';
import { startTestTemporal, type TestTemporal, workflowBundle } from '../harness/temporal';
import { until } from '../harness/until';

/**
 * A namespace nobody registered the merge's search attributes in (a cluster set up without the
 * README's `temporal operator search-attribute create`): a merge waits before its first step,
 * touching nothing, and goes on by itself once they are registered.
 */

const execFileAsync = promisify(execFile);
const { EventType, WorkflowTaskFailedCause } = temporal.api.enums.v1;

let t: TestTemporal;
let engine: Worker;
let running: Promise<void>;

beforeAll(async () => {
  t = await startTestTemporal({ registerSearchAttributes: false });
  engine = await createEngineWorker(t.connection, t.server.namespace, { workflowBundle: await workflowBundle() });
  running = engine.run();
});

afterAll(async () => {
  if (engine?.getState() === 'RUNNING') engine.shutdown();
  await running;
  await t?.close();
});

test('without the search attributes a merge waits before any step and resumes once they are registered', async () => {
  expect(await missingSearchAttributes(t.connection, t.server.namespace)).toEqual(
    MERGE_SEARCH_ATTRIBUTES.map((k) => k.name),
  );

  const handle = await t.client.workflow.start(LiveMergeWorkflow, {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId('snap-unregistered'),
    // No host agent runs here: nothing may be asked of a host before the attributes exist.
    args: [
      {
        snapshotId: 'snap-unregistered',
        vmId: 'vm-7',
        hostId: 'host1',
        disks: [{ diskId: 'disk0', baseVolumeId: 'd0v0', topVolumeId: 'd0v1' }],
      },
    ],
  });
  const events = async () => (await handle.fetchHistory()).events ?? [];

  const failedTask = await until(
    async () => (await events()).find((e) => e.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED),
    30_000,
  );
  expect(failedTask.workflowTaskFailedEventAttributes?.cause).toBe(
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_SEARCH_ATTRIBUTES,
  );
  expect(failedTask.workflowTaskFailedEventAttributes?.failure?.message).toMatch(
    /^BadSearchAttributes: Namespace default has no mapping defined for search attribute (VmId|HostId|SnapshotId)$/,
  );
  expect((await handle.describe()).status.name).toBe('RUNNING');
  expect((await events()).map((e) => e.eventType)).toEqual([
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
  ]);

  // The operator registers them with the command the engine worker logs; the merge goes on by itself.
  await execFileAsync(temporalBin(), [...searchAttributeCreateArgs(t.server.namespace), '--address', t.server.address]);
  expect(await missingSearchAttributes(t.connection, t.server.namespace)).toEqual([]);
  await until(
    async () => (await events()).some((e) => e.eventType === EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED),
    60_000,
  );
  expect((await handle.describe()).typedSearchAttributes.get(VM_ID)).toBe('vm-7');
  await handle.terminate('test done: no host agent runs here');
});

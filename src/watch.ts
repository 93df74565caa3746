/**
 * `npm run watch -- --snapshot-id X`: follows the merge of snapshot X (workflow `live-merge-X`)
 * until it ends, one progress bar per disk on a terminal, plain lines otherwise (CI, pipes).
 * Finds Temporal as the workers and the Temporal CLI do (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
 * TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE, temporal.toml). Exit code 0 when the merge
 * completed, 1 when it failed or was cancelled, 2 for bad flags or no such merge.
 */
import { parseArgs } from 'node:util';

import { Client, Connection, WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { z } from 'zod';

import { temporalTarget } from './config/connection';
import { liveMergeWorkflowId } from './config/names';
import { describeIssues, idSchema } from './domain/input';
import { followMerge } from './progress/follow';
import { createProgressView } from './progress/view';

const USAGE = 'usage: npm run watch -- --snapshot-id ID [--interval-ms MS]';
const flagsSchema = z.object({
  snapshotId: idSchema,
  intervalMs: z.coerce.number().int().min(100).max(60_000),
});

class UsageError extends Error {}

async function main(): Promise<number> {
  let flags: z.infer<typeof flagsSchema>;
  try {
    const { values } = parseArgs({
      options: { 'snapshot-id': { type: 'string' }, 'interval-ms': { type: 'string', default: '500' } },
      strict: true,
    });
    if (!values['snapshot-id']) throw new UsageError('--snapshot-id is required');
    const parsed = flagsSchema.safeParse({ snapshotId: values['snapshot-id'], intervalMs: values['interval-ms'] });
    if (!parsed.success) throw new UsageError(`invalid flags: ${describeIssues(parsed.error)}`);
    flags = parsed.data;
  } catch (err) {
    throw new UsageError(`${(err as Error).message}\n${USAGE}`);
  }

  const target = temporalTarget();
  const connection = await Connection.connect(target.connectionOptions);
  try {
    const client = new Client({ connection, namespace: target.namespace });
    const workflowId = liveMergeWorkflowId(flags.snapshotId);
    try {
      await client.workflow.getHandle(workflowId).describe();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError)
        throw new UsageError(
          `no merge of snapshot ${flags.snapshotId} (workflow ${workflowId} not found in namespace ${target.namespace})`,
        );
      throw err;
    }
    console.log(
      `merge of snapshot ${flags.snapshotId} (workflow ${workflowId}, ${target.connectionOptions.address}, namespace ${target.namespace})`,
    );
    const end = await followMerge(client, flags.snapshotId, createProgressView(process.stdout), flags.intervalMs);
    if (!end.ok) {
      const cause =
        end.error instanceof WorkflowFailedError ? (end.error.cause?.message ?? end.error.message) : String(end.error);
      console.log(`merge FAILED: ${cause}`);
      return 1;
    }
    for (const d of end.value.disks) {
      console.log(
        `${d.diskId}: ${d.outcome}${d.commitKind ? ` (${d.commitKind} commit)` : ''}, ${d.chainBefore.join(' -> ')}  =>  ${d.chainAfter.join(' -> ')}`,
      );
    }
    console.log('merge completed');
    return 0;
  } finally {
    await connection.close();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof UsageError ? err.message : err);
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);

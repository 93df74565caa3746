import type { Client } from '@temporalio/client';

import { liveMergeWorkflowId } from '../config/names';
import type { LiveMergeRequest } from '../domain/input';
import type { LiveMergeResult } from '../domain/outcome';
import { readMergeProgress } from './read-progress';
import type { ProgressView } from './view';

export type MergeEnd = { ok: true; value: LiveMergeResult } | { ok: false; error: unknown };

/**
 * Shows a running merge's progress on `view` every `intervalMs` until the merge ends, then once
 * more, and resolves to its result or its error. A progress read that fails (the workflow not yet
 * on a worker, say) is skipped: the next turn reads again.
 */
export async function followMerge(
  client: Client,
  snapshotId: string,
  view: ProgressView,
  intervalMs = 300,
): Promise<MergeEnd> {
  const handle = client.workflow.getHandle<(r: LiveMergeRequest) => Promise<LiveMergeResult>>(
    liveMergeWorkflowId(snapshotId),
  );
  const result: Promise<MergeEnd> = handle.result().then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
  try {
    for (;;) {
      const done = await Promise.race([result.then(() => true), sleep(intervalMs).then(() => false)]);
      const progress = await readMergeProgress(client, snapshotId).catch(() => undefined);
      if (progress) view.update(progress);
      if (done) return await result;
    }
  } finally {
    view.stop();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

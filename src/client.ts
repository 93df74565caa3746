/**
 * The engine client: how engine code starts and steers live merges.
 *
 * ```ts
 * const merges = await LiveMergeClient.connect(); // TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TLS, API key, profile
 * await merges.startMerge({ snapshotId: 'snap-42', vmId: 'vm-7', hostId: 'host1', disks: [...] });
 * await merges.getProgress('snap-42');
 * await merges.setBandwidth('snap-42', 32 * 1024 * 1024);
 * const result = await merges.result('snap-42');
 * ```
 */
import { Client, Connection, WorkflowExecutionAlreadyStartedError, type WorkflowHandle } from '@temporalio/client';
import { z } from 'zod';

import { temporalTarget } from './config/connection';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from './config/names';
import { bandwidthRequestSchema, type BandwidthSet } from './domain/bandwidth';
import { idSchema, liveMergeInputSchema, type LiveMergeRequest } from './domain/input';
import type { LiveMergeResult } from './domain/outcome';
import type { MergeProgress } from './domain/progress';
import { readMergeProgress } from './progress/read-progress';
import { setBandwidthUpdate } from './workflows/definitions';
import type { LiveMergeWorkflow } from './workflows/live-merge';

export type { BandwidthSet, DiskBandwidth } from './domain/bandwidth';
export type { LiveMergeRequest } from './domain/input';
export type { DiskFailed, DiskMerged, DiskOutcome, LiveMergeResult } from './domain/outcome';
export type { DiskPhase, DiskProgress, MergeProgress } from './domain/progress';

export interface FieldIssue {
  /** Path of the field, e.g. `disks.0.topVolumeId`; `(input)` for the whole value. */
  field: string;
  message: string;
}

/** A request refused by the client before anything was sent to Temporal. */
export class InvalidMergeRequestError extends Error {
  override readonly name = 'InvalidMergeRequestError';
  constructor(
    readonly issues: FieldIssue[],
    what = 'merge request',
  ) {
    super(`invalid ${what}: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`);
  }

  /** The fields at fault. */
  get fields(): string[] {
    return this.issues.map((i) => i.field);
  }
}

export type LiveMergeConnectOptions =
  /** Use this client (its connection stays the caller's to close). */
  | { client: Client }
  /**
   * Connect as the Temporal CLI does: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY,
   * TEMPORAL_TLS_* (client certificate and key, server CA, server name), TEMPORAL_PROFILE and the
   * temporal.toml profile file (TEMPORAL_CONFIG_FILE). `env` defaults to process.env.
   */
  | { env?: NodeJS.ProcessEnv };

export interface MergeStart {
  handle: WorkflowHandle<typeof LiveMergeWorkflow>;
  workflowId: string;
  runId: string;
  /** False when a merge of this snapshot was running (or had completed): its run is returned. */
  started: boolean;
}

export class LiveMergeClient {
  private constructor(
    readonly client: Client,
    private readonly ownConnection?: Connection,
  ) {}

  static async connect(opts: LiveMergeConnectOptions = {}): Promise<LiveMergeClient> {
    if ('client' in opts) return new LiveMergeClient(opts.client);
    const target = temporalTarget(opts.env);
    const connection = await Connection.connect(target.connectionOptions);
    return new LiveMergeClient(new Client({ connection, namespace: target.namespace }), connection);
  }

  /** Closes the connection `connect` opened (not a client that was passed in). */
  async close(): Promise<void> {
    await this.ownConnection?.close();
  }

  /**
   * Starts the merge of a snapshot, one per snapshot: the request is checked first (nothing is
   * sent when it is invalid: InvalidMergeRequestError names each field). When a merge of this
   * snapshot is running, or has completed, its handle is returned and nothing new starts; a merge
   * that failed, was cancelled or terminated is started again (it finishes what is left).
   */
  async startMerge(request: LiveMergeRequest): Promise<MergeStart> {
    const input = check(liveMergeInputSchema, request, 'merge request');
    const workflowId = liveMergeWorkflowId(input.snapshotId);
    try {
      const handle = await this.client.workflow.start<typeof LiveMergeWorkflow>('LiveMergeWorkflow', {
        taskQueue: ENGINE_TASK_QUEUE,
        workflowId,
        args: [input],
        workflowIdConflictPolicy: 'FAIL',
        workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
      });
      return { handle, workflowId, runId: handle.firstExecutionRunId, started: true };
    } catch (err) {
      if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      const handle = this.handle(input.snapshotId);
      const { runId } = await handle.describe();
      return { handle, workflowId, runId, started: false };
    }
  }

  /** The merge's workflow (its latest run). */
  handle(snapshotId: string): WorkflowHandle<typeof LiveMergeWorkflow> {
    return this.client.workflow.getHandle<typeof LiveMergeWorkflow>(liveMergeWorkflowId(checkSnapshotId(snapshotId)));
  }

  /** Each disk's phase, and the live offset/len of every running block job. */
  async getProgress(snapshotId: string): Promise<MergeProgress> {
    return readMergeProgress(this.client, checkSnapshotId(snapshotId));
  }

  /**
   * Changes the speed limit of the merge's block jobs (bytes per second, 0 is unlimited): running
   * jobs at once, jobs not started yet when they start. Answers what each disk's job did with it.
   */
  async setBandwidth(snapshotId: string, bytesPerSec: number): Promise<BandwidthSet> {
    const request = check(bandwidthRequestSchema, { bytesPerSec }, 'bandwidth');
    return this.handle(snapshotId).executeUpdate(setBandwidthUpdate, { args: [request] });
  }

  /** Cancels the merge: running block jobs are cancelled, chains stay as they were. */
  async cancel(snapshotId: string): Promise<void> {
    await this.handle(snapshotId).cancel();
  }

  /** Waits for the merge's end: its result, or WorkflowFailedError naming each failed disk. */
  async result(snapshotId: string): Promise<LiveMergeResult> {
    return this.handle(snapshotId).result();
  }
}

function check<S extends z.ZodType>(schema: S, value: unknown, what: string): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new InvalidMergeRequestError(
      parsed.error.issues.map((i) => ({ field: i.path.length ? i.path.join('.') : '(input)', message: i.message })),
      what,
    );
  }
  return parsed.data;
}

const snapshotIdSchema = z.object({ snapshotId: idSchema });

function checkSnapshotId(snapshotId: string): string {
  return check(snapshotIdSchema, { snapshotId }, 'snapshot id').snapshotId;
}

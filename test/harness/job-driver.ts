import { mkdirSync, mkdtempSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import type { HostDeps } from '../../src/activities';
import type { WaitStep } from '../../src/activities/inputs';
import { createWaitForBlockJob } from '../../src/activities/wait-for-block-job';
import type { Checkpoint } from '../../src/domain/checkpoint';
import type { CommitSpace } from '../../src/domain/commit';
import type { GuestIo } from '../../src/domain/speed';
import type { BlockJob, DiskChain, HypervisorDriver, StartCommit, VmState } from '../../src/drivers/driver';

/**
 * The one fake driver of the unit tests: a block job's side of the driver (what the wait and the
 * cancel call), each test's subclass playing the job its way; every other call fails the test.
 */
export abstract class JobDriver implements HypervisorDriver {
  abstract listJobs(vmId: string): Promise<BlockJob[]>;
  abstract completeJob(vmId: string, jobId: string): Promise<void>;
  abstract cancelJob(vmId: string, jobId: string): Promise<void>;
  abstract setSpeed(vmId: string, jobId: string, speed: number): Promise<void>;
  abstract nextJobChange(vmId: string, timeoutMs: number, signal?: AbortSignal): Promise<void>;
  async close(): Promise<void> {}

  private unused(call: string): never {
    throw new Error(`${call} is not a block job's call: this fake driver plays a job only`);
  }
  vmState = (): Promise<VmState> => this.unused('vmState');
  definedActive = (): Promise<string> => this.unused('definedActive');
  redefineActive = (): Promise<void> => this.unused('redefineActive');
  readChain = (): Promise<DiskChain> => this.unused('readChain');
  readAllChains = (): Promise<DiskChain[]> => this.unused('readAllChains');
  startCommit = (_vmId: string, _commit: StartCommit): Promise<void> => this.unused('startCommit');
  dismissJob = (): Promise<void> => this.unused('dismissJob');
  nodesHolding = (): Promise<string[]> => this.unused('nodesHolding');
  releaseVolume = (): Promise<void> => this.unused('releaseVolume');
  hypervisorPids = (): Promise<number[]> => this.unused('hypervisorPids');
  flushNode = (): Promise<void> => this.unused('flushNode');
  measureCommitSpace = (): Promise<CommitSpace> => this.unused('measureCommitSpace');
  guestIo = (): Promise<GuestIo> => this.unused('guestIo');
}

/**
 * What the wait and the cancel need of a host: the driver, and a storage root whose disk `d1` has
 * its image dir (the pivot record lives there). The caller removes `storageRoot` when done.
 */
export function jobDeps(driver: HypervisorDriver): HostDeps {
  const storageRoot = mkdtempSync(path.join(os.tmpdir(), 'lm-job-'));
  mkdirSync(path.join(storageRoot, 'images', 'd1'), { recursive: true });
  return { driver, storageRoot } as Pick<HostDeps, 'driver' | 'storageRoot'> as HostDeps;
}

/**
 * Runs the block-job wait on `driver` as an activity, resumed from `heartbeatDetails` when given,
 * collecting its heartbeats. The caller removes `deps.storageRoot` when done.
 */
export function runWait(driver: HypervisorDriver, input: WaitStep, heartbeatDetails?: Checkpoint) {
  const env = new MockActivityEnvironment(heartbeatDetails ? { heartbeatDetails } : {}, {
    logger: new DefaultLogger('ERROR'),
  });
  const beats: Checkpoint[] = [];
  env.on('heartbeat', (d: Checkpoint) => beats.push(d));
  const deps = jobDeps(driver);
  return { env, beats, deps, result: env.run(createWaitForBlockJob(deps), input) };
}

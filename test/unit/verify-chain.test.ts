/**
 * verifyChain, the check between a block job's end and the delete of its top: it passes only when
 * the top is out of the disk's chain and the base is in it. SimDriver as the QEMU side (the check
 * reads nothing but the chain); on real QEMU in test/qemu/guards.test.ts.
 */
import { type ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import { SimDriver } from '../../lab/sim/sim-driver';
import type { HostActivities } from '../../src/activities';
import { volumePath } from '../../src/domain/layout';
import { VolumeUsage } from '../../src/volume-users';
import { failureOf } from '../harness/failure';
import { hostSteps } from '../harness/host-steps';

const root = '/nonexistent/lm-verify';
let sim: SimDriver;
let usage: VolumeUsage;
let acts: HostActivities;

const vol = (id: string, diskId = 'd1'): string => volumePath(root, diskId, id);
const env = (): MockActivityEnvironment => new MockActivityEnvironment({}, { logger: new DefaultLogger('ERROR') });
const step = (top: string, base: string, diskId = 'd1') => ({
  vmId: 'vm1',
  diskId,
  topVolumeId: top,
  baseVolumeId: base,
});

const refusal = (p: Promise<unknown>): Promise<ApplicationFailure> =>
  failureOf(p, 'expected the chain check to fail, it passed');

beforeEach(() => {
  sim = new SimDriver({ seed: 1 });
  // d1 after a merge of v1 into v0; d2 untouched, with volumes of the same names.
  sim.addVm('vm1', [
    { diskId: 'd1', volumes: [vol('v2'), vol('v0')] },
    { diskId: 'd2', volumes: [vol('v2', 'd2'), vol('v1', 'd2'), vol('v0', 'd2')] },
  ]);
  usage = new VolumeUsage(root);
  acts = hostSteps(root, sim, usage);
});

afterEach(async () => {
  usage.close();
  await sim.close();
});

test('top gone and base present: passes with the chain as QEMU reports it', async () => {
  expect(await env().run(acts.verifyChain, step('v1', 'v0'))).toEqual({ chain: ['v2', 'v0'] });
});

test('the top still in the chain: ChainVerificationFailed naming it, with the chain seen', async () => {
  const f = await refusal(env().run(acts.verifyChain, step('v2', 'v0')));
  expect(f).toMatchObject({ type: 'ChainVerificationFailed', nonRetryable: true });
  expect(f.message).toBe('chain check failed on disk d1: top volume v2 is still in the chain (v2 -> v0); volume kept');
  expect(f.details).toEqual([{ chain: ['v2', 'v0'] }]);
});

test('the base missing from the chain, the top gone too: ChainVerificationFailed naming the base', async () => {
  const f = await refusal(env().run(acts.verifyChain, step('v1', 'v9')));
  expect(f).toMatchObject({ type: 'ChainVerificationFailed', nonRetryable: true });
  expect(f.message).toBe(
    'chain check failed on disk d1: base volume v9 is missing from the chain (v2 -> v0); volume kept',
  );
});

test("another disk's volumes of the same names do not count: the paths are the disk's own", async () => {
  // v1 of d1 is gone from d1's chain; d2 still has a v1, which is not d1's.
  expect(await env().run(acts.verifyChain, step('v1', 'v0'))).toEqual({ chain: ['v2', 'v0'] });
  const f = await refusal(env().run(acts.verifyChain, step('v1', 'v0', 'd2')));
  expect(f.message).toContain('top volume v1 is still in the chain (v2 -> v1 -> v0)');
});

import { MockActivityEnvironment } from '@temporalio/testing';
import { DefaultLogger } from '@temporalio/worker';

import { keepAlive } from '../../src/activities/keep-alive';

/** keepAlive heartbeats a short host step every second, unless it runs as a local activity. */

const slowStep = keepAlive(async (ms: number) => {
  await new Promise((r) => setTimeout(r, ms));
  return ms;
});

function beatsOf(isLocal: boolean) {
  const env = new MockActivityEnvironment({ isLocal }, { logger: new DefaultLogger('ERROR') });
  let beats = 0;
  env.on('heartbeat', () => beats++);
  return { beats: () => beats, result: env.run(slowStep, 2200) };
}

test('an activity step heartbeats every second while it runs', async () => {
  const { beats, result } = beatsOf(false);
  await expect(result).resolves.toBe(2200);
  expect(beats()).toBe(2);
});

test('a local step (no heartbeat there) runs without one', async () => {
  const { beats, result } = beatsOf(true);
  await expect(result).resolves.toBe(2200);
  expect(beats()).toBe(0);
});

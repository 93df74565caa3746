import { runChaos } from './chaos';

/** 12. A short seeded chaos run (the full one: npx tsx test/fault/chaos.ts --merges 50). */

jest.setTimeout(300_000);

test('12. chaos: merges under random kills of engine, host agent and server keep the invariant on every disk', async () => {
  const seed = Number(process.env.LIVE_MERGE_CHAOS_SEED ?? 20261125);
  const lines: string[] = [];
  const report = await runChaos({ merges: 4, seed, parallel: 2, log: (l) => lines.push(l) });
  console.log(
    `chaos seed ${seed}: ${report.kills.length} kills, workflows ${JSON.stringify(report.workflows)}\n${lines.join('\n')}`,
  );
  expect(report.kills.length).toBeGreaterThan(0);
  expect(report.disks.filter((d) => d.state === 'BROKEN')).toEqual([]);
  expect(report.disks.length).toBeGreaterThanOrEqual(4);
});

import { prng, runChaos } from '../fault/chaos';
import { runStopChaos } from '../fault/stop-chaos';

/**
 * 12. A short seeded chaos run, each VM's guest writing through its merge (the full one:
 * npx tsx test/fault/chaos.ts --merges 20). In test/guest/: it boots guests, one run at a time.
 * 13. The same with QEMU killed at a random moment of each merge (the full one: --mode qemu --merges 30).
 */

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
  // Every disk's guest wrote, and the check found every acknowledged write.
  for (const d of report.disks) {
    expect(d.guest.acknowledged).toBeGreaterThan(0);
    expect([d.diskId, d.guest.lost, d.guest.found]).toEqual([d.diskId, 0, d.guest.offsetsAcknowledged]);
  }
});

test('13. chaos, QEMU killed mid-merge: each merge finishes and names the volume that holds every acknowledged write', async () => {
  const seed = Number(process.env.LIVE_MERGE_CHAOS_SEED ?? 20261207);
  const lines: string[] = [];
  const report = await runStopChaos({ merges: 2, seed, parallel: 2, random: prng(seed), log: (l) => lines.push(l) });
  console.log(`chaos (qemu) seed ${seed}:\n${lines.join('\n')}`);
  expect(report.disks.filter((d) => d.state === 'BROKEN')).toEqual([]);
  expect(report.disks.length).toBeGreaterThanOrEqual(3);
  for (const d of report.disks) {
    expect(d.guest.acknowledged).toBeGreaterThan(0);
    expect([d.diskId, d.guest.lost, d.guest.found]).toEqual([d.diskId, 0, d.guest.offsetsAcknowledged]);
  }
});

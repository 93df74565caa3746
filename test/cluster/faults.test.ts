import type { Cluster } from '../../lab/cluster/cluster';
import { setHostLink } from '../../lab/cluster/netns';
import {
  bothJobsRunning,
  destroyHostVms,
  expectMergedRight,
  MiB,
  recordRecovery,
  sleep,
  startHostMerge,
  startTestCluster,
  stopTestCluster,
} from './harness';

/**
 * The product on the production topology (make cluster's, lab/cluster/): PostgreSQL, Temporal as
 * five processes (two history) with mTLS, two engine workers, three hosts each in its own network
 * namespace. Each fault hits while a merge's block jobs run; each merge must end with the right
 * chain and data and one block job per disk. Recovery times go to test-artifacts/fault-recovery.jsonl:
 * `healthyMs` from the fault's end to the DB-aware healthcheck passing, `recoveryMs` to the merge's end.
 */

jest.setTimeout(300_000);

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startTestCluster(['host1', 'host2', 'host3'], 2);
}, 300_000);
afterEach(() => destroyHostVms(cluster), 60_000);
afterAll(() => stopTestCluster(cluster), 120_000);

/** 4 MiB per layer at 1 MiB/s: each disk's job runs several seconds. */
const SHORT = { layerDataMiB: 4, bandwidth: 1 * MiB };

async function healthyAfter(from: number): Promise<number> {
  await cluster.waitHealthy();
  return Date.now() - from;
}

test('merges on the three hosts at once complete, each on its own host', async () => {
  const merges = await Promise.all(
    ['host1', 'host2', 'host3'].map((h) =>
      startHostMerge(cluster, h, `snap-all-${h}`, SHORT.layerDataMiB, SHORT.bandwidth),
    ),
  );
  for (const m of merges) await expectMergedRight(cluster, m);
});

test.each([
  ['fast', 'host1'],
  ['immediate', 'host2'],
] as const)('PostgreSQL restarted (%s) mid-merge: the merge completes', async (mode, hostId) => {
  const m = await startHostMerge(cluster, hostId, `snap-pg-${mode}`, SHORT.layerDataMiB, SHORT.bandwidth);
  await bothJobsRunning(m);
  await cluster.pg.restart(mode);
  const restarted = Date.now();
  const healthyMs = await healthyAfter(restarted);
  await expectMergedRight(cluster, m);
  recordRecovery(`cluster: PostgreSQL restarted (${mode})`, Date.now() - restarted, { healthyMs });
});

test('PostgreSQL stopped for 20 s mid-merge: the healthcheck fails meanwhile, the merge completes after', async () => {
  const m = await startHostMerge(cluster, 'host3', 'snap-pg-down', SHORT.layerDataMiB, SHORT.bandwidth);
  await bothJobsRunning(m);
  await cluster.pg.stop('fast');
  const stopped = Date.now();
  // `cluster health` alone still says SERVING here; deploy/temporal/healthcheck.sh must not.
  expect(await cluster.healthy()).toBe(false);
  await sleep(20_000 - (Date.now() - stopped));
  await cluster.pg.start();
  const started = Date.now();
  const healthyMs = await healthyAfter(started);
  await expectMergedRight(cluster, m);
  recordRecovery('cluster: PostgreSQL stopped 20 s', Date.now() - started, { healthyMs });
});

test('one history process killed mid-merge: its shards move to the other and the merge completes', async () => {
  const m = await startHostMerge(cluster, 'host1', 'snap-history', SHORT.layerDataMiB, SHORT.bandwidth);
  await bothJobsRunning(m);
  await cluster.services.get('history-1')!.kill();
  const killed = Date.now();
  const healthyMs = await healthyAfter(killed);
  await expectMergedRight(cluster, m);
  recordRecovery('cluster: history process killed (shards move)', Date.now() - killed, { healthyMs });
  cluster.startService('history-1');
  await cluster.waitHealthy();
});

test('the frontend restarted mid-merge: the merge completes', async () => {
  const m = await startHostMerge(cluster, 'host2', 'snap-frontend', SHORT.layerDataMiB, SHORT.bandwidth);
  await bothJobsRunning(m);
  await cluster.services.get('frontend')!.stop();
  await sleep(2000);
  cluster.startService('frontend');
  const restarted = Date.now();
  const healthyMs = await healthyAfter(restarted);
  await expectMergedRight(cluster, m);
  recordRecovery('cluster: frontend restarted', Date.now() - restarted, { healthyMs });
});

test('one engine worker of two killed mid-merge: the other takes the workflows over', async () => {
  const merges = await Promise.all(
    ['host1', 'host3'].map((h) => startHostMerge(cluster, h, `snap-engine-${h}`, SHORT.layerDataMiB, SHORT.bandwidth)),
  );
  for (const m of merges) await bothJobsRunning(m);
  await cluster.engines[0]!.kill();
  const killed = Date.now();
  for (const m of merges) await expectMergedRight(cluster, m);
  recordRecovery('cluster: engine worker killed (1 of 2)', Date.now() - killed);
  await cluster.startEngine(0);
});

test('a host partitioned longer than the wait heartbeat timeout while its jobs run, then healed: the merge completes', async () => {
  // 8 MiB per layer at 512 KiB/s: each job runs about 30 s, longer than the partition.
  const m = await startHostMerge(cluster, 'host2', 'snap-partition', 8, 512 * 1024);
  await bothJobsRunning(m);
  setHostLink(cluster.net, 'host2', 'down');
  const cut = Date.now();
  try {
    await sleep(25_000); // JOB_WAIT_HEARTBEAT_TIMEOUT is 15 s: the server times the waits out meanwhile
    // The jobs never depended on the network: QEMU ran them on.
    expect((await m.jobs.list()).length).toBe(2);
  } finally {
    setHostLink(cluster.net, 'host2', 'up');
  }
  const healed = Date.now();
  await expectMergedRight(cluster, m);
  recordRecovery('cluster: host partitioned 25 s, healed', Date.now() - healed, { partitionMs: healed - cut });
});

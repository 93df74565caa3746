import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Connection } from '@temporalio/client';

import { FRONTEND_TLS_NAME } from '../../lab/cluster/certs';
import type { Cluster } from '../../lab/cluster/cluster';
import { writeProfile } from '../../lab/cluster/describe';
import { temporalBin } from '../../lab/devserver/temporal-bin';
import { MERGE_SEARCH_ATTRIBUTES } from '../../src/config/search-attributes';
import { destroyHostVms, expectMergedRight, MiB, startHostMerge, startTestCluster, stopTestCluster } from './harness';

/**
 * Who reaches the cluster's frontend (mTLS), and the README's cluster commands run as written.
 * Temporal's mTLS decides WHO may talk to the frontend (a certificate from the cluster's CA); it
 * does not decide which task queues a caller may poll (see README, "Beyond one machine").
 */

jest.setTimeout(240_000);
const run = promisify(execFile);

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startTestCluster(['host1', 'host2'], 1);
}, 300_000);
afterEach(() => destroyHostVms(cluster), 60_000);
afterAll(() => stopTestCluster(cluster), 120_000);

/** The error of a connection and one call, or undefined when the frontend answered. */
async function callError(options: Parameters<typeof Connection.connect>[0]): Promise<unknown> {
  try {
    const connection = await Connection.connect({ ...options, connectTimeout: 5000 });
    try {
      await connection.workflowService.describeNamespace({ namespace: 'default' });
    } finally {
      await connection.close();
    }
    return undefined;
  } catch (err) {
    return err;
  }
}

test('the frontend answers a client with a certificate of the cluster CA', async () => {
  expect(await callError(cluster.connectionOptions(cluster.certs.cli))).toBeUndefined();
});

test('refused: no client certificate, one from another CA, plaintext', async () => {
  const ca = readFileSync(cluster.certs.ca);
  const tls = { serverNameOverride: FRONTEND_TLS_NAME, serverRootCACertificate: ca };
  const rogue = {
    crt: readFileSync(cluster.certs.rogue.cert),
    key: readFileSync(cluster.certs.rogue.key),
  };
  expect(await callError({ address: cluster.address, tls })).toBeDefined();
  expect(await callError({ address: cluster.address, tls: { ...tls, clientCertPair: rogue } })).toBeDefined();
  expect(await callError({ address: cluster.address })).toBeDefined();
  // The CLI too: in plaintext, and with the other CA's certificate.
  const cli = temporalBin();
  await expect(run(cli, ['operator', 'cluster', 'health', '--address', cluster.address])).rejects.toThrow();
  await expect(
    run(cli, ['operator', 'cluster', 'health'], { env: { ...process.env, ...cluster.cliEnv(cluster.certs.rogue) } }),
  ).rejects.toThrow();
});

test('README: the search-attribute command registers all five (each --type pairs with its --name)', async () => {
  const readme = readFileSync(path.resolve(__dirname, '../../README.md'), 'utf8');
  const block = /```sh\n(temporal operator search-attribute create[^`]*?)```/.exec(readme)?.[1];
  expect(block).toBeDefined();
  const argv = block!.replace(/\\\n/g, ' ').trim().split(/\s+/);
  expect(argv.filter((a) => a === '--type').length).toBe(argv.filter((a) => a === '--name').length);
  await run(temporalBin(), argv.slice(1), { env: { ...process.env, ...cluster.cliEnv() } });
  const { stdout } = await run(temporalBin(), ['operator', 'search-attribute', 'list', '--output', 'json'], {
    env: { ...process.env, ...cluster.cliEnv() },
  });
  for (const key of MERGE_SEARCH_ATTRIBUTES) expect(stdout).toContain(`"${key.name}"`);
});

test('make cluster prints CLI flags and a temporal.toml profile that both reach the frontend', async () => {
  const { certs } = cluster;
  const flags = ['--address', cluster.address, '--namespace', 'default', '--tls'];
  flags.push('--tls-cert-path', certs.cli.cert, '--tls-key-path', certs.cli.key);
  flags.push('--tls-ca-path', certs.ca, '--tls-server-name', FRONTEND_TLS_NAME);
  // Nothing from this process's environment: the flags or the profile alone.
  const bare = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TEMPORAL_')));
  await run(temporalBin(), ['operator', 'namespace', 'describe', ...flags], { env: bare });
  const profile = writeProfile(cluster);
  const { stdout } = await run(temporalBin(), ['operator', 'namespace', 'describe'], {
    env: { ...bare, TEMPORAL_CONFIG_FILE: profile, TEMPORAL_PROFILE: 'cluster' },
  });
  expect(stdout).toContain('default');
});

test("a host agent showing another host's certificate is let in by Temporal: mTLS authenticates, it does not restrict task queues", async () => {
  const host2 = cluster.hosts.get('host2')!;
  await host2.agent!.stop();
  await cluster.startHost('host2', cluster.certs.host('host1'));
  try {
    const m = await startHostMerge(cluster, 'host2', 'snap-wrong-cert', 2, 4 * MiB);
    await expectMergedRight(cluster, m);
  } finally {
    await host2.agent!.stop();
    await cluster.startHost('host2');
  }
});

test('npm run watch follows a merge on the cluster through the TEMPORAL_TLS_* variables, to its end', async () => {
  const m = await startHostMerge(cluster, 'host1', 'snap-watch', 2, 2 * MiB);
  const { stdout } = await run(
    process.execPath,
    ['--import', 'tsx', path.resolve(__dirname, '../../src/watch.ts'), '--snapshot-id', 'snap-watch'],
    { cwd: path.resolve(__dirname, '../..'), env: { ...process.env, ...cluster.cliEnv() }, timeout: 120_000 },
  );
  expect(stdout).toContain('disk1');
  await expectMergedRight(cluster, m);
});

import * as path from 'node:path';

import { FRONTEND_TLS_NAME } from '../../lab/cluster/certs';
import { Cluster, FRONTEND_ADDRESS } from '../../lab/cluster/cluster';
import { removePostgresDir } from '../../lab/cluster/postgres';
import { startDevServer } from '../../lab/devserver/dev-server';
import type { PhaseSpec } from './phase';

/**
 * The servers the throughput benchmark runs against: the CLI's dev server (one process, SQLite)
 * and the production topology of lab/cluster (PostgreSQL, the Temporal services as five processes,
 * mTLS), without its engine workers and hosts: the benchmark brings its own, like the dev server's.
 */
export interface ThroughputTarget {
  name: 'dev-server' | 'cluster';
  /** Where the phases' workers connect, and the network namespace they run in to reach it. */
  connection: Pick<PhaseSpec, 'address' | 'namespace' | 'tls'>;
  netns?: string;
  /** The server's processes (sampled for memory and CPU) and the database's, when it has one apart. */
  serverPids(): number[];
  databasePid(): number | undefined;
  stop(): Promise<void>;
}

export async function startDevServerTarget(dir: string): Promise<ThroughputTarget> {
  const server = await startDevServer({
    dbFile: path.join(dir, 'temporal.sqlite'),
    logFile: path.join(dir, 'server.log'),
    headless: true,
  });
  return {
    name: 'dev-server',
    connection: { address: server.address, namespace: server.namespace },
    serverPids: () => (server.process.pid ? [server.process.pid] : []),
    databasePid: () => undefined,
    stop: () => server.stop(),
  };
}

export async function startClusterTarget(dir: string, log: (line: string) => void): Promise<ThroughputTarget> {
  const cluster = await Cluster.start({ dir, hostIds: [], engines: 0 }, (s) => log(`  cluster: ${s}`));
  const { engine } = cluster.certs;
  return {
    name: 'cluster',
    connection: {
      address: FRONTEND_ADDRESS,
      namespace: cluster.namespace,
      tls: { serverName: FRONTEND_TLS_NAME, caFile: cluster.certs.ca, certFile: engine.cert, keyFile: engine.key },
    },
    netns: cluster.net.coreNetns,
    serverPids: () => [...cluster.services.values()].map((p) => p.pid),
    databasePid: () => cluster.pg.pid(),
    stop: async () => {
      await cluster.stop();
      removePostgresDir(dir); // outside `dir` (lab/cluster/postgres.ts)
    },
  };
}

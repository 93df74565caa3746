import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { freePort } from '../devserver/free-port';
import { FRONTEND_TLS_NAME } from './certs';
import type { Cluster } from './cluster';
import { type ClusterProcess, startProcess, waitFor } from './process';

const repoRoot = path.resolve(__dirname, '../..');

/**
 * The Temporal Web UI server (built by scripts/ensure-temporal-ui.sh from the module the CLI
 * embeds) on 127.0.0.1, reaching the frontend through the relay with the CLI's certificate.
 */
export async function startWebUi(
  cluster: Cluster,
): Promise<{ url: string; process: ClusterProcess; stop(): Promise<void> }> {
  const bin = execFileSync('bash', [path.join(repoRoot, 'scripts/ensure-temporal-ui.sh')], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  }).trim();
  const port = await freePort();
  const root = path.join(cluster.opts.dir, 'ui');
  mkdirSync(path.join(root, 'config'), { recursive: true });
  const config = {
    temporalGrpcAddress: cluster.address,
    host: '127.0.0.1',
    port,
    enableUi: true,
    defaultNamespace: cluster.namespace,
    cors: { cookieInsecure: true },
    tls: {
      caFile: cluster.certs.ca,
      certFile: cluster.certs.cli.cert,
      keyFile: cluster.certs.cli.key,
      serverName: FRONTEND_TLS_NAME,
      enableHostVerification: true,
    },
  };
  writeFileSync(path.join(root, 'config', 'cluster.yaml'), JSON.stringify(config, null, 2)); // JSON is YAML
  const proc = startProcess('web ui', [bin, '--root', root, '--config', 'config', '--env', 'cluster', 'start'], {
    logFile: path.join(cluster.opts.dir, 'logs', 'web-ui.log'),
  });
  const url = `http://127.0.0.1:${port}`;
  await Promise.race([
    waitFor('the Web UI answering', async () => (await fetch(`${url}/api/v1/namespaces`)).ok, 60_000),
    proc.exited,
  ]);
  return { url, process: proc, stop: () => proc.stop() };
}

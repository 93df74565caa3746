import { writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { FRONTEND_TLS_NAME } from './certs';
import { type Cluster, FRONTEND_ADDRESS } from './cluster';

/** A temporal.toml profile `cluster` for this cluster (the CLI's and the SDK's environment configuration). */
export function writeProfile(cluster: Cluster): string {
  const file = path.join(cluster.opts.dir, 'temporal.toml');
  const { certs } = cluster;
  writeFileSync(
    file,
    [
      '[profile.cluster]',
      `address = "${cluster.address}"`,
      `namespace = "${cluster.namespace}"`,
      '[profile.cluster.tls]',
      `client_cert_path = "${certs.cli.cert}"`,
      `client_key_path = "${certs.cli.key}"`,
      `server_ca_cert_path = "${certs.ca}"`,
      `server_name = "${FRONTEND_TLS_NAME}"`,
      '',
    ].join('\n'),
  );
  return file;
}

/** What make cluster prints once the topology is up: where everything is and how to reach it. */
export function describeCluster(cluster: Cluster, uiUrl: string | undefined): string {
  const { certs } = cluster;
  const profile = writeProfile(cluster);
  const lines = [
    '',
    'cluster up (Ctrl-C or `make cluster-down` stops it)',
    `  frontend:   ${FRONTEND_ADDRESS} in ${cluster.net.coreNetns} (mTLS); from here ${cluster.address} (relay)`,
    `  postgresql: ${cluster.pg.address} in ${cluster.net.coreNetns}`,
    `  web ui:     ${uiUrl ?? 'not running'}`,
    ...[...cluster.hosts.values()].map(
      (h) =>
        `  ${h.hostId}:      ${h.ip} in ${h.netns}; storage ${h.storageRoot}; run ${h.runDir}; lab VM vm-${h.hostId}`,
    ),
    `  logs:       ${path.join(cluster.opts.dir, 'logs')}`,
    '',
    'Temporal CLI, with flags:',
    `  temporal workflow list --address ${cluster.address} --namespace ${cluster.namespace} --tls \\`,
    `    --tls-cert-path ${certs.cli.cert} --tls-key-path ${certs.cli.key} \\`,
    `    --tls-ca-path ${certs.ca} --tls-server-name ${FRONTEND_TLS_NAME}`,
    'or with the profile:',
    `  TEMPORAL_CONFIG_FILE=${profile} TEMPORAL_PROFILE=cluster temporal workflow list`,
    '',
  ];
  return lines.join('\n');
}

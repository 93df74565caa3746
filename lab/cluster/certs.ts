import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

/** The frontend's name in its certificate; clients that reach it by another address set it as the TLS server name. */
export const FRONTEND_TLS_NAME = 'temporal-frontend';

/** One client certificate and its key, as the SDK's and the CLI's TLS settings name them. */
export interface CertPair {
  cert: string;
  key: string;
}

export interface ClusterCerts {
  dir: string;
  ca: string;
  frontend: CertPair;
  systemWorker: CertPair;
  engine: CertPair;
  cli: CertPair;
  host(hostId: string): CertPair;
  /** A client certificate from a CA the cluster does not trust (tests of the refusal). */
  rogue: CertPair;
}

const openssl = (args: string[], cwd: string) =>
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });

function newKey(dir: string, name: string): void {
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`], dir);
}

function selfSignedCa(dir: string, name: string, subject: string): void {
  if (existsSync(path.join(dir, `${name}.pem`))) return;
  newKey(dir, name);
  openssl(
    ['req', '-x509', '-new', '-key', `${name}.key`, '-sha256', '-days', '3650', '-subj', `/CN=${subject}`]
      .concat(['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
      .concat(['-out', `${name}.pem`]),
    dir,
  );
}

/** A leaf certificate `<name>.pem`/`.key` signed by `<ca>.pem`, for a server (with SANs) or a client. */
function signedLeaf(dir: string, ca: string, name: string, kind: 'server' | 'client', sans: string[] = []): CertPair {
  const pair = { cert: path.join(dir, `${name}.pem`), key: path.join(dir, `${name}.key`) };
  if (existsSync(pair.cert)) return pair;
  newKey(dir, name);
  openssl(['req', '-new', '-key', `${name}.key`, '-subj', `/CN=${name}`, '-out', `${name}.csr`], dir);
  const ext = [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature,keyEncipherment',
    `extendedKeyUsage=${kind === 'server' ? 'serverAuth,clientAuth' : 'clientAuth'}`,
    ...(sans.length ? [`subjectAltName=${sans.join(',')}`] : []),
  ];
  writeFileSync(path.join(dir, `${name}.ext`), `${ext.join('\n')}\n`);
  openssl(
    ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial'].concat([
      '-days',
      '825',
      '-sha256',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    ]),
    dir,
  );
  return pair;
}

/**
 * The cluster's CA and certificates, made once under `dir` and reused: the frontend's (its name
 * and `frontendIp` as SANs), the server's own worker service's, the engine workers', each host
 * agent's (CN = its host id), the CLI's, and one from another CA.
 */
export function ensureClusterCerts(dir: string, frontendIp: string, hostIds: string[]): ClusterCerts {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  selfSignedCa(dir, 'ca', 'live-merge cluster CA');
  selfSignedCa(dir, 'rogue-ca', 'some other CA');
  const leaf = (name: string) => signedLeaf(dir, 'ca', name, 'client');
  const frontend = signedLeaf(dir, 'ca', 'frontend', 'server', [
    `DNS:${FRONTEND_TLS_NAME}`,
    'DNS:localhost',
    `IP:${frontendIp}`,
    'IP:127.0.0.1',
  ]);
  const certs: ClusterCerts = {
    dir,
    ca: path.join(dir, 'ca.pem'),
    frontend,
    systemWorker: leaf('system-worker'),
    engine: leaf('engine'),
    cli: leaf('cli'),
    host: (hostId) => leaf(`host-${hostId}`),
    rogue: signedLeaf(dir, 'rogue-ca', 'rogue-client', 'client'),
  };
  for (const h of hostIds) certs.host(h);
  return certs;
}

/** The Temporal CLI's and the SDK's environment for a client with `pair` (README, "TLS"). */
export function tlsEnv(certs: ClusterCerts, pair: CertPair): Record<string, string> {
  return {
    TEMPORAL_TLS: 'true',
    TEMPORAL_TLS_CLIENT_CERT_PATH: pair.cert,
    TEMPORAL_TLS_CLIENT_KEY_PATH: pair.key,
    TEMPORAL_TLS_SERVER_CA_CERT_PATH: certs.ca,
    TEMPORAL_TLS_SERVER_NAME: FRONTEND_TLS_NAME,
  };
}

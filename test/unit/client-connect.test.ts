import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { temporalTarget } from '../../src/config/connection';

/**
 * Where LiveMergeClient.connect() (and every worker) connects: the Temporal environment
 * configuration, as the CLI reads it. No server needed: these check the connection options.
 */

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'lm-connect-'));
  writeFileSync(path.join(dir, 'client.pem'), 'CLIENT CERT');
  writeFileSync(path.join(dir, 'client.key'), 'CLIENT KEY');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('environment variables: address, namespace, API key, TLS with a client certificate', () => {
  const target = temporalTarget({
    TEMPORAL_ADDRESS: 'temporal.example:7233',
    TEMPORAL_NAMESPACE: 'merges',
    TEMPORAL_API_KEY: 'secret',
    TEMPORAL_TLS_CLIENT_CERT_PATH: path.join(dir, 'client.pem'),
    TEMPORAL_TLS_CLIENT_KEY_PATH: path.join(dir, 'client.key'),
    TEMPORAL_CONFIG_FILE: path.join(dir, 'absent.toml'),
  });
  expect(target.namespace).toBe('merges');
  expect(target.connectionOptions).toMatchObject({ address: 'temporal.example:7233', apiKey: 'secret' });
  const tls = target.connectionOptions.tls as { clientCertPair?: { crt: Uint8Array; key: Uint8Array } };
  expect(Buffer.from(tls.clientCertPair!.crt).toString()).toBe('CLIENT CERT');
  expect(Buffer.from(tls.clientCertPair!.key).toString()).toBe('CLIENT KEY');
});

test('a profile of the temporal.toml file, chosen with TEMPORAL_PROFILE', () => {
  const file = path.join(dir, 'temporal.toml');
  writeFileSync(
    file,
    [
      '[profile.prod]',
      'address = "prod.example:7233"',
      'namespace = "prod-merges"',
      '[profile.prod.tls]',
      `client_cert_path = "${path.join(dir, 'client.pem')}"`,
      `client_key_path = "${path.join(dir, 'client.key')}"`,
      'server_name = "prod.example"',
    ].join('\n'),
  );
  const target = temporalTarget({ TEMPORAL_CONFIG_FILE: file, TEMPORAL_PROFILE: 'prod' });
  expect(target.namespace).toBe('prod-merges');
  expect(target.connectionOptions.address).toBe('prod.example:7233');
  expect(target.connectionOptions.tls).toMatchObject({ serverNameOverride: 'prod.example' });
});

test('nothing set: localhost:7233 and the default namespace', () => {
  const target = temporalTarget({ TEMPORAL_CONFIG_FILE: path.join(dir, 'absent.toml') });
  expect(target).toMatchObject({ namespace: 'default', connectionOptions: { address: 'localhost:7233' } });
});

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';

import { parse } from 'yaml';
import { z } from 'zod';

import { freePort } from '../../lab/devserver/free-port';
import { temporalTarget } from '../../src/config/connection';
import { cliTypeName, MERGE_SEARCH_ATTRIBUTES } from '../../src/config/search-attributes';
import { loadWorkerConfig } from '../../src/config/worker-config';

/**
 * docker-compose.yml, checked without a Docker engine: every worker service's command and
 * environment parse with the worker's own configuration schema, images are pinned, every
 * long-running service has a healthcheck, ports stay on 127.0.0.1.
 */

const root = path.resolve(__dirname, '../..');
const serviceSchema = z
  .object({
    image: z.string().optional(),
    build: z.unknown().optional(),
    command: z.union([z.string(), z.array(z.string())]).optional(),
    entrypoint: z.array(z.string()).optional(),
    environment: z.record(z.string(), z.union([z.string(), z.number()])).optional(),
    ports: z.array(z.string()).optional(),
    volumes: z.array(z.string()).optional(),
    depends_on: z
      .record(
        z.string(),
        z.object({ condition: z.enum(['service_started', 'service_healthy', 'service_completed_successfully']) }),
      )
      .optional(),
    healthcheck: z
      .object({
        test: z.array(z.string()).min(2),
        interval: z.string(),
        timeout: z.string(),
        retries: z.number().int().positive(),
      })
      .passthrough()
      .optional(),
    restart: z.string().optional(),
  })
  .passthrough();
type Service = z.infer<typeof serviceSchema>;

const compose = z
  .object({ services: z.record(z.string(), serviceSchema), volumes: z.record(z.string(), z.unknown()).optional() })
  .passthrough()
  .parse(parse(readFileSync(path.join(root, 'docker-compose.yml'), 'utf8'), { merge: true }));
const services = Object.entries(compose.services);
const packageVersion = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string })
  .version;
const WORKER_IMAGE = `live-merge-worker:${packageVersion}`;
const workers = services.filter(([, s]) => s.image === WORKER_IMAGE);
const hostAgents = workers.filter(([, s]) => String(s.command).includes('host'));

function env(s: Service): Record<string, string> {
  return Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, String(v)]));
}

/** Jobs that run once and exit: whoever depends on them waits for their successful completion. */
function oneShots(): string[] {
  return services
    .filter(([name]) => services.some(([, s]) => s.depends_on?.[name]?.condition === 'service_completed_successfully'))
    .map(([n]) => n);
}

const TEMPORAL_SERVICES = [
  'temporal-frontend',
  'temporal-history-1',
  'temporal-history-2',
  'temporal-matching',
  'temporal-worker',
];

test('the topology: PostgreSQL, schema setup, the Temporal services, namespace setup, the Web UI, the engine and host agents', () => {
  expect(compose.services.postgresql.image).toMatch(/^postgres:/);
  expect(compose.services['temporal-schema'].image).toMatch(/^temporalio\/admin-tools:/);
  expect(compose.services['temporal-namespace'].image).toMatch(/^temporalio\/admin-tools:/);
  expect(compose.services['temporal-ui'].image).toMatch(/^temporalio\/ui:/);
  expect(workers.map(([n]) => n)).toContain('engine');
  expect(hostAgents.length).toBeGreaterThanOrEqual(1);
  // Five server processes, as test/cluster/ runs them: two of them history.
  const commands = TEMPORAL_SERVICES.map((n) => String(compose.services[n]?.command));
  expect(commands.sort()).toEqual(['frontend', 'history', 'history', 'matching', 'worker']);
  const serverVersion = compose.services['temporal-frontend'].image!.split(':')[1];
  // Server, admin tools and schema are one release, the one scripts/ensure-temporal-server.sh builds.
  expect(readFileSync(path.join(root, 'scripts/ensure-temporal-server.sh'), 'utf8')).toContain(`v${serverVersion}}`);
  expect(compose.services['temporal-schema'].image!.split(':')[1].startsWith(`${serverVersion}-`)).toBe(true);
  expect(compose.services['temporal-namespace'].image).toBe(compose.services['temporal-schema'].image);
  for (const name of TEMPORAL_SERVICES) {
    const server = compose.services[name];
    expect(server.image).toBe(`temporalio/server:${serverVersion}`);
    // The config and dynamic config are this repository's deploy/temporal, mounted where the paths point.
    expect(server.volumes).toContain('./deploy/temporal:/etc/temporal/deploy:ro');
    expect(String(server.entrypoint)).toContain('--root /etc/temporal/deploy --config config --env live-merge');
    const dynamic = env(server).TEMPORAL_DYNAMIC_CONFIG_FILE.replace('/etc/temporal/deploy', 'deploy/temporal');
    expect(parse(readFileSync(path.join(root, dynamic), 'utf8'))).toEqual(expect.any(Object));
    expect(server.healthcheck!.test).toEqual(['CMD', 'sh', '/etc/temporal/deploy/healthcheck.sh']);
  }
  expect(existsSync(path.join(root, 'deploy/temporal/config/live-merge.yaml'))).toBe(true);
  // The schema and namespace steps are the scripts lab/cluster runs.
  expect(compose.services['temporal-schema'].entrypoint).toEqual(['/bin/sh', '/etc/temporal/deploy/setup-schema.sh']);
  expect(compose.services['temporal-namespace'].entrypoint).toEqual([
    '/bin/sh',
    '/etc/temporal/deploy/setup-namespace.sh',
  ]);
});

test('every image is pinned to an exact version; the worker image is built from a pinned base', () => {
  for (const [name, s] of services) {
    const image = s.image;
    expect({ name, image }).toEqual({ name, image: expect.any(String) });
    const tag = image!.split(':')[1] ?? '';
    expect({ name, tag }).not.toEqual({ name, tag: expect.stringMatching(/latest/) });
    // x.y.z (optionally with a suffix); PostgreSQL numbers its releases major.minor.
    const exact = image!.startsWith('postgres:') ? /^\d+\.\d+$/ : /^\d+\.\d+\.\d+(-[\w.-]+)?$/;
    expect({ name, tag }).toEqual({ name, tag: expect.stringMatching(exact) });
  }
  for (const [, s] of workers) expect(s.build).toBe('.');
  const froms = readFileSync(path.join(root, 'Dockerfile'), 'utf8').match(/^FROM\s+\S+/gm) ?? [];
  expect(froms.length).toBeGreaterThan(0);
  for (const from of froms) expect(from).toMatch(/^FROM\s+[\w./-]+:\d+\.\d+\.\d+(-[\w.-]+)?$/);
});

test('every long-running service has a healthcheck, and dependents wait for it; one-shot jobs are waited for to complete', () => {
  expect(oneShots().sort()).toEqual(['temporal-namespace', 'temporal-schema']);
  for (const [name, s] of services) {
    if (oneShots().includes(name)) {
      expect({ name, restart: s.restart }).toEqual({ name, restart: expect.stringMatching(/^on-failure/) });
      expect({ name, healthcheck: s.healthcheck }).toEqual({ name, healthcheck: undefined });
      continue;
    }
    expect({ name, healthcheck: s.healthcheck?.test[0] }).toEqual({
      name,
      healthcheck: expect.stringMatching(/^CMD(-SHELL)?$/),
    });
  }
  for (const [name, s] of services) {
    for (const [dep, { condition }] of Object.entries(s.depends_on ?? {})) {
      expect(compose.services[dep]).toBeDefined();
      expect({ name, dep, condition }).toEqual({
        name,
        dep,
        condition: oneShots().includes(dep) ? 'service_completed_successfully' : 'service_healthy',
      });
    }
  }
});

test("each worker service's command and environment parse with the worker configuration schema; hosts are distinct", () => {
  const hostIds: string[] = [];
  for (const [name, s] of workers) {
    const command = Array.isArray(s.command) ? s.command : [];
    const config = loadWorkerConfig(command, env(s));
    // Where Temporal is comes from the Temporal environment, as the workers read it.
    // (TLS files are checked by name here: they exist in the containers, not on this machine.)
    const tlsVars = Object.entries(env(s)).filter(([k]) => k.startsWith('TEMPORAL_TLS_'));
    const target = temporalTarget(
      Object.fromEntries(Object.entries(env(s)).filter(([k]) => !k.startsWith('TEMPORAL_TLS'))),
    );
    expect(env(s).TEMPORAL_TLS).toBe('true');
    for (const [, v] of tlsVars.filter(([k]) => k.endsWith('_PATH'))) expect(v).toMatch(/^\/etc\/temporal\/tls\//);
    expect((s.volumes ?? []).some((v) => v.endsWith(':/etc/temporal/tls:ro'))).toBe(true);
    expect({ name, address: target.connectionOptions.address, namespace: target.namespace }).toEqual({
      name,
      address: 'temporal-frontend:7233',
      namespace: 'default',
    });
    expect(compose.services['temporal-frontend'].healthcheck).toBeDefined();
    // Metrics on, and the healthcheck asks that very port.
    expect(config.metricsAddress).toMatch(/^0\.0\.0\.0:\d+$/);
    const port = config.metricsAddress!.split(':')[1];
    expect(s.healthcheck!.test.join(' ')).toContain(`http://127.0.0.1:${port}/metrics`);
    if (config.roles.includes('host')) {
      hostIds.push(config.hostId!);
      expect(name).toBe(`host-agent-${config.hostId}`);
      // Each host shows its own certificate (docs/deployment.md: what mTLS does and does not restrict).
      expect(env(s).TEMPORAL_TLS_CLIENT_CERT_PATH).toBe(`/etc/temporal/tls/host-${config.hostId}.pem`);
      // The host's storage root and run dir are mounted where the config says.
      const targets = (s.volumes ?? []).map((v) => v.split(':')[1]);
      expect(targets).toEqual(expect.arrayContaining([config.storageRoot, config.runDir]));
    } else {
      expect(config.roles).toEqual(['engine']);
      expect(s.volumes?.length).toBe(1); // the certificates only
    }
  }
  expect(hostIds.length).toBe(hostAgents.length);
  expect(new Set(hostIds).size).toBe(hostIds.length);
});

test('published ports are bound to 127.0.0.1', () => {
  for (const [name, s] of services) {
    for (const port of s.ports ?? [])
      expect({ name, port }).toEqual({ name, port: expect.stringMatching(/^127\.0\.0\.1:\d+:\d+$/) });
  }
});

test("the namespace step registers every search attribute of src/config/search-attributes.ts with the CLI's type name", () => {
  const script = readFileSync(path.join(root, 'deploy/temporal/setup-namespace.sh'), 'utf8').replace(/\\\n\s*/g, '');
  for (const key of MERGE_SEARCH_ATTRIBUTES) {
    expect(script).toContain(`--name ${key.name} --type ${cliTypeName(key.type)}`);
    expect(script).toMatch(new RegExp(`names="[^"]*\\b${key.name}\\b`)); // and then checked with search-attribute list
  }
});

describe("the workers' healthcheck command", () => {
  let server: Server;
  let body = '';
  beforeAll(async () => {
    server = createServer((_req, res) => res.end(body));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** The service's healthcheck as Docker would run it, pointed at `port` instead. */
  function runHealthcheck(port: number): Promise<number | null> {
    const [, s] = workers[0];
    const [cmd, bin, ...args] = s.healthcheck!.test;
    expect([cmd, bin]).toEqual(['CMD', 'node']);
    const pointed = args.map((a) => a.replace(/127\.0\.0\.1:\d+/, `127.0.0.1:${port}`));
    const child = spawn(process.execPath, pointed, { stdio: 'ignore', timeout: 10_000 });
    return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  test('healthy once the SDK reports a started worker, unhealthy before or without an endpoint', async () => {
    const port = (server.address() as AddressInfo).port;
    body = '# HELP temporal_worker_start x\ntemporal_worker_start{task_queue="live-merge-engine"} 1\n';
    expect(await runHealthcheck(port)).toBe(0);
    body = 'temporal_request{operation="GetSystemInfo"} 1\n';
    expect(await runHealthcheck(port)).toBe(1);
    expect(await runHealthcheck(await freePort())).toBe(1);
  });
});

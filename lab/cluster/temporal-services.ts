import { execFile, execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { SetupError } from '../setup-error';
import { inNetns } from './netns';
import { PG_PASSWORD, PG_PORT, PG_USER } from './postgres';
import { type ClusterProcess, startProcess } from './process';

const run = promisify(execFile);
const repoRoot = path.resolve(__dirname, '../..');
/** The server's config directory as kept in the repo (docker-compose.yml mounts the same files). */
export const DEPLOY_DIR = path.join(repoRoot, 'deploy/temporal');

/**
 * The server's processes, as a deployment scales them: one frontend, one matching, one worker
 * service, and two history processes that share the shards (the server's membership ring hands
 * each its share and moves them when one goes). All listen on the core namespace's bridge address.
 */
export const SERVICE_NAMES = ['frontend', 'history-1', 'history-2', 'matching', 'worker'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** Ports of each process: gRPC, membership, metrics (and the frontend's HTTP API). */
const PORTS: Record<ServiceName, { env: Record<string, string>; metrics: number }> = {
  frontend: {
    env: {
      TEMPORAL_FRONTEND_PORT: '7233',
      TEMPORAL_FRONTEND_MEMBERSHIP_PORT: '6933',
      TEMPORAL_FRONTEND_HTTP_PORT: '7243',
    },
    metrics: 9091,
  },
  'history-1': { env: { TEMPORAL_HISTORY_PORT: '7234', TEMPORAL_HISTORY_MEMBERSHIP_PORT: '6934' }, metrics: 9092 },
  'history-2': { env: { TEMPORAL_HISTORY_PORT: '7244', TEMPORAL_HISTORY_MEMBERSHIP_PORT: '6944' }, metrics: 9093 },
  matching: { env: { TEMPORAL_MATCHING_PORT: '7235', TEMPORAL_MATCHING_MEMBERSHIP_PORT: '6935' }, metrics: 9094 },
  worker: { env: { TEMPORAL_WORKER_PORT: '7239', TEMPORAL_WORKER_MEMBERSHIP_PORT: '6939' }, metrics: 9095 },
};
export const FRONTEND_PORT = 7233;

/** Where scripts/ensure-temporal-server.sh keeps temporal-server and temporal-sql-tool (building them once). */
export function temporalServerBinDir(): string {
  const script = path.join(repoRoot, 'scripts/ensure-temporal-server.sh');
  try {
    return execFileSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  } catch (err) {
    // The script said why on stderr, above.
    throw new SetupError(
      'the Temporal server is not built (scripts/ensure-temporal-server.sh failed): run make setup',
      {
        cause: err,
      },
    );
  }
}

export interface ServiceContext {
  binDir: string;
  coreNetns: string;
  bindIp: string;
  tlsDir: string;
  logDir: string;
  logLevel: string;
}

/** The environment the config template (deploy/temporal/config/live-merge.yaml) reads for `service`. */
export function serviceEnv(ctx: ServiceContext, service: ServiceName): Record<string, string> {
  return {
    TEMPORAL_BIND_IP: ctx.bindIp,
    TEMPORAL_BROADCAST_ADDRESS: ctx.bindIp,
    TEMPORAL_METRICS_PORT: String(PORTS[service].metrics),
    TEMPORAL_TLS_DIR: ctx.tlsDir,
    TEMPORAL_LOG_LEVEL: ctx.logLevel,
    TEMPORAL_DYNAMIC_CONFIG_FILE: path.join(DEPLOY_DIR, 'dynamicconfig/live-merge.yaml'),
    POSTGRES_ADDRESS: `127.0.0.1:${PG_PORT}`,
    POSTGRES_USER: PG_USER,
    POSTGRES_PWD: PG_PASSWORD,
    ...PORTS[service].env,
  };
}

export function startService(ctx: ServiceContext, service: ServiceName): ClusterProcess {
  const kind = service.startsWith('history') ? 'history' : service;
  const argv = inNetns(ctx.coreNetns, [
    path.join(ctx.binDir, 'temporal-server'),
    ...['--root', DEPLOY_DIR, '--config', 'config', '--env', 'live-merge', '--allow-no-auth'],
    ...['start', '--service', kind],
  ]);
  return startProcess(`temporal ${service}`, argv, {
    logFile: path.join(ctx.logDir, `temporal-${service}.log`),
    env: serviceEnv(ctx, service),
  });
}

/** deploy/temporal/setup-schema.sh inside the core namespace, where PostgreSQL listens. */
export async function setupSchema(ctx: ServiceContext): Promise<string> {
  const argv = inNetns(ctx.coreNetns, ['sh', path.join(DEPLOY_DIR, 'setup-schema.sh')]);
  const { stdout, stderr } = await run(argv[0], argv.slice(1), {
    env: {
      ...process.env,
      PATH: `${ctx.binDir}:${process.env.PATH ?? ''}`,
      SQL_HOST: '127.0.0.1',
      SQL_PORT: String(PG_PORT),
      SQL_USER: PG_USER,
      SQL_PASSWORD: PG_PASSWORD,
    },
    timeout: 120_000,
  });
  return stdout + stderr;
}

/** Runs one of deploy/temporal's CLI scripts with the CLI's environment `cliEnv` (address and TLS). */
export async function runCliScript(
  script: 'setup-namespace.sh' | 'healthcheck.sh',
  cliEnv: Record<string, string>,
  timeoutMs = 120_000,
): Promise<string> {
  const { stdout, stderr } = await run('sh', [path.join(DEPLOY_DIR, script)], {
    env: { ...process.env, ...cliEnv },
    timeout: timeoutMs,
  });
  return stdout + stderr;
}

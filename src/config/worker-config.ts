import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { z } from 'zod';

import { describeIssues, idSchema } from '../domain/input';

/**
 * A worker's configuration, from flags over environment. The Temporal address, namespace, TLS
 * and API key are not here: they come from Temporal's own environment configuration
 * (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_PROFILE, temporal.toml), as the CLI takes them.
 */
export const roleSchema = z.enum(['engine', 'host']);
export type Role = z.infer<typeof roleSchema>;

/** `host:port` of the Prometheus endpoint (`/metrics`), e.g. `127.0.0.1:9464` or `0.0.0.0:9464`. */
export const metricsAddressSchema = z
  .string()
  .regex(/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:9464')
  .refine((a) => Number(a.slice(a.lastIndexOf(':') + 1)) <= 65535, 'port must be at most 65535');
export const logLevelSchema = z.enum(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR']);
/** How a host agent reaches its VMs: QEMU's QMP sockets under the run dir, or libvirt. */
export const hostDriverSchema = z.enum(['qmp', 'libvirt']);
export type HostDriverKind = z.infer<typeof hostDriverSchema>;
/** The libvirt connection a host agent uses unless told otherwise: the local system QEMU driver. */
export const DEFAULT_LIBVIRT_URI = 'qemu:///system';
/** A libvirt connection URI, e.g. `qemu:///system` or `qemu+ssh://host/system`. */
export const libvirtUriSchema = z
  .string()
  .regex(/^[a-z][a-z0-9+.-]*:\/\/[^\s]*$/, 'must be a libvirt URI, e.g. qemu:///system');

export const workerConfigSchema = z
  .object({
    roles: z.array(roleSchema).min(1, 'must name at least one role (engine, host)'),
    hostId: idSchema.optional(),
    storageRoot: z.string().min(1).optional(),
    runDir: z.string().min(1).optional(),
    driver: hostDriverSchema.default('qmp'),
    /** The libvirt connection of `driver: libvirt`. */
    libvirtUri: libvirtUriSchema.default(DEFAULT_LIBVIRT_URI),
    /** Where the SDK runtime serves Prometheus metrics; none when unset. */
    metricsAddress: metricsAddressSchema.optional(),
    logLevel: logLevelSchema.default('INFO'),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (!c.roles.includes('host')) return;
    for (const field of ['hostId', 'storageRoot', 'runDir'] as const) {
      if (!c[field]) ctx.addIssue({ code: 'custom', path: [field], message: 'is required for the host role' });
    }
  })
  .transform((c) => ({
    ...c,
    storageRoot: c.storageRoot && path.resolve(c.storageRoot),
    runDir: c.runDir && path.resolve(c.runDir),
  }));
export type WorkerConfig = z.infer<typeof workerConfigSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export const WORKER_USAGE = `usage: worker --role engine|host[,engine] [--host-id ID --storage-root DIR --run-dir DIR]
              [--driver qmp|libvirt] [--libvirt-uri URI]
              [--metrics-address HOST:PORT] [--log-level TRACE|DEBUG|INFO|WARN|ERROR]
  env: LIVE_MERGE_ROLE, LIVE_MERGE_HOST_ID, LIVE_MERGE_STORAGE_ROOT, LIVE_MERGE_RUN_DIR,
       LIVE_MERGE_DRIVER, LIVE_MERGE_LIBVIRT_URI, LIVE_MERGE_METRICS_ADDRESS, LIVE_MERGE_LOG_LEVEL
  Temporal connection: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_*, TEMPORAL_PROFILE`;

export function loadWorkerConfig(argv: string[], env: NodeJS.ProcessEnv): WorkerConfig {
  let values: Record<string, string | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        role: { type: 'string' },
        'host-id': { type: 'string' },
        'storage-root': { type: 'string' },
        'run-dir': { type: 'string' },
        driver: { type: 'string' },
        'libvirt-uri': { type: 'string' },
        'metrics-address': { type: 'string' },
        'log-level': { type: 'string' },
      },
      strict: true,
    }) as { values: Record<string, string | undefined> });
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n${WORKER_USAGE}`);
  }
  const roles = (values.role ?? env.LIVE_MERGE_ROLE ?? '')
    .split(',')
    .map((r) => r.trim())
    .filter(Boolean);
  const parsed = workerConfigSchema.safeParse({
    roles,
    hostId: values['host-id'] ?? env.LIVE_MERGE_HOST_ID,
    storageRoot: values['storage-root'] ?? env.LIVE_MERGE_STORAGE_ROOT,
    runDir: values['run-dir'] ?? env.LIVE_MERGE_RUN_DIR,
    driver: values.driver ?? (env.LIVE_MERGE_DRIVER || undefined),
    libvirtUri: values['libvirt-uri'] ?? (env.LIVE_MERGE_LIBVIRT_URI || undefined),
    metricsAddress: values['metrics-address'] ?? (env.LIVE_MERGE_METRICS_ADDRESS || undefined),
    logLevel: (values['log-level'] ?? (env.LIVE_MERGE_LOG_LEVEL || 'INFO')).toUpperCase(),
  });
  if (!parsed.success)
    throw new ConfigError(`invalid worker configuration: ${describeIssues(parsed.error)}\n${WORKER_USAGE}`);
  return parsed.data;
}

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

export const workerConfigSchema = z
  .object({
    roles: z.array(roleSchema).min(1, 'must name at least one role (engine, host)'),
    hostId: idSchema.optional(),
    storageRoot: z.string().min(1).optional(),
    runDir: z.string().min(1).optional(),
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
  env: LIVE_MERGE_ROLE, LIVE_MERGE_HOST_ID, LIVE_MERGE_STORAGE_ROOT, LIVE_MERGE_RUN_DIR
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
      },
      strict: true,
    }) as { values: Record<string, string | undefined> });
  } catch (err) {
    throw new ConfigError(`${(err as Error).message}\n${WORKER_USAGE}`);
  }
  const roles = (values.role ?? env.LIVE_MERGE_ROLE ?? '').split(',').map((r) => r.trim()).filter(Boolean);
  const parsed = workerConfigSchema.safeParse({
    roles,
    hostId: values['host-id'] ?? env.LIVE_MERGE_HOST_ID,
    storageRoot: values['storage-root'] ?? env.LIVE_MERGE_STORAGE_ROOT,
    runDir: values['run-dir'] ?? env.LIVE_MERGE_RUN_DIR,
  });
  if (!parsed.success) throw new ConfigError(`invalid worker configuration: ${describeIssues(parsed.error)}\n${WORKER_USAGE}`);
  return parsed.data;
}

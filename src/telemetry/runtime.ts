import { DefaultLogger, type LogEntry, type LogLevel, makeTelemetryFilterString, Runtime } from '@temporalio/worker';

import { MERGE_DURATION_BUCKETS_SECONDS, MERGE_METRICS } from '../config/metrics';

export interface TelemetryConfig {
  /** `host:port` to serve Prometheus metrics on (`/metrics`); none when unset. */
  metricsAddress?: string;
  logLevel: LogLevel;
  /** Where the JSON lines go (stdout by default). */
  write?: (line: string) => void;
}

/**
 * Installs the process's one SDK runtime: JSON-lines logs (the SDK's, Core's, and every workflow's
 * and activity's `log` with their workflowId, activity type, and the host agent's hostId) and,
 * with `metricsAddress`, the Prometheus exporter that serves the SDK's metrics and the merge's own
 * (src/config/metrics.ts). Must run before anything else creates the runtime.
 */
export function installRuntime(config: TelemetryConfig): Runtime {
  const write = config.write ?? ((line: string) => process.stdout.write(line));
  return Runtime.install({
    shutdownSignals: ['SIGINT', 'SIGTERM'],
    logger: new DefaultLogger(config.logLevel, (entry) => write(jsonLine(entry))),
    telemetryOptions: {
      logging: {
        forward: {},
        filter: makeTelemetryFilterString({
          core: config.logLevel === 'TRACE' || config.logLevel === 'DEBUG' ? config.logLevel : 'WARN',
        }),
      },
      ...(config.metricsAddress
        ? {
            metrics: {
              prometheus: {
                bindAddress: config.metricsAddress,
                histogramBucketOverrides: { [MERGE_METRICS.duration]: MERGE_DURATION_BUCKETS_SECONDS },
              },
            },
          }
        : {}),
    },
  });
}

/** One log entry as one JSON line: time, level, message, then its attributes flat. */
export function jsonLine(entry: LogEntry): string {
  const time = new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString();
  const record = { time, level: entry.level, message: entry.message, ...entry.meta };
  return `${JSON.stringify(record, (_key, value: unknown) => (typeof value === 'bigint' ? value.toString() : value instanceof Error ? { name: value.name, message: value.message, stack: value.stack } : value))}\n`;
}

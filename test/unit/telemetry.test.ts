import { LogTimestamp } from '@temporalio/worker';

import { ConfigError, loadWorkerConfig } from '../../src/config/worker-config';
import { jsonLine } from '../../src/telemetry/runtime';

const host = ['--role', 'host', '--host-id', 'host1', '--storage-root', '/srv/storage', '--run-dir', '/run/lm'];

describe('worker configuration: metrics address and log level', () => {
  test('from the flag, over the environment; none and INFO by default', () => {
    expect(loadWorkerConfig(['--role', 'engine'], {})).toMatchObject({ metricsAddress: undefined, logLevel: 'INFO' });
    expect(
      loadWorkerConfig(['--role', 'engine'], {
        LIVE_MERGE_METRICS_ADDRESS: '0.0.0.0:9464',
        LIVE_MERGE_LOG_LEVEL: 'debug',
      }),
    ).toMatchObject({
      metricsAddress: '0.0.0.0:9464',
      logLevel: 'DEBUG',
    });
    expect(
      loadWorkerConfig([...host, '--metrics-address', '127.0.0.1:9500', '--log-level', 'WARN'], {
        LIVE_MERGE_METRICS_ADDRESS: '0.0.0.0:9464',
      }),
    ).toMatchObject({
      roles: ['host'],
      hostId: 'host1',
      metricsAddress: '127.0.0.1:9500',
      logLevel: 'WARN',
    });
    expect(loadWorkerConfig(['--role', 'engine', '--metrics-address', '[::1]:9464'], {}).metricsAddress).toBe(
      '[::1]:9464',
    );
    // An empty variable (compose's `VAR:`) means unset.
    expect(loadWorkerConfig(['--role', 'engine'], { LIVE_MERGE_METRICS_ADDRESS: '' }).metricsAddress).toBeUndefined();
  });

  test.each([['9464'], ['localhost'], ['127.0.0.1:99999'], ['http://127.0.0.1:9464'], ['127.0.0.1:94a']])(
    'a bad metrics address %s is refused, naming the field',
    (address) => {
      expect(() => loadWorkerConfig(['--role', 'engine', '--metrics-address', address], {})).toThrow(ConfigError);
      expect(() => loadWorkerConfig(['--role', 'engine', '--metrics-address', address], {})).toThrow(/metricsAddress/);
    },
  );

  test('a bad log level is refused', () => {
    expect(() => loadWorkerConfig(['--role', 'engine', '--log-level', 'LOUD'], {})).toThrow(/logLevel/);
  });
});

test('a log entry is one JSON line: time, level, message, then its attributes', () => {
  const line = jsonLine({
    level: 'INFO',
    message: 'block commit started',
    timestampNanos: 1_764_095_474_730_123_456n,
    meta: {
      workflowId: 'live-merge-s1-disk-disk0',
      hostId: 'host1',
      diskId: 'disk0',
      size: 10n,
      error: new Error('boom'),
      [LogTimestamp]: 1n,
    },
  });
  expect(line.endsWith('\n')).toBe(true);
  expect(line.trimEnd()).not.toContain('\n');
  const record = JSON.parse(line) as Record<string, unknown>;
  expect(record).toMatchObject({
    time: '2025-11-25T18:31:14.730Z',
    level: 'INFO',
    message: 'block commit started',
    workflowId: 'live-merge-s1-disk-disk0',
    hostId: 'host1',
    diskId: 'disk0',
    size: '10',
    error: { name: 'Error', message: 'boom' },
  });
  expect(Object.keys(record).slice(0, 3)).toEqual(['time', 'level', 'message']);
});

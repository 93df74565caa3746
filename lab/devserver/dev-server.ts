import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import * as path from 'node:path';

import { Connection } from '@temporalio/client';

import { devServerSearchAttributeArgs } from '../../src/config/search-attributes';
import { SetupError } from '../setup-error';
import { logChildOutput } from './child-log';
import { freePort } from './free-port';
import { temporalBin } from './temporal-bin';

export interface DevServerOptions {
  /** SQLite file of the server's state; a restart on the same file keeps every workflow. */
  dbFile: string;
  port?: number;
  uiPort?: number;
  /** Where the server's output goes. */
  logFile?: string;
  headless?: boolean;
  /** false: leave the merges' search attributes unregistered, as on a cluster nobody set up (tests). */
  registerSearchAttributes?: boolean;
  namespace?: string;
}

export interface DevServer {
  address: string;
  uiUrl: string | undefined;
  namespace: string;
  process: ChildProcess;
  options: Required<Pick<DevServerOptions, 'dbFile' | 'port' | 'uiPort'>> & DevServerOptions;
  /** SIGTERM, then SIGKILL after 5 s. */
  stop(): Promise<void>;
  /** SIGKILL: a crash. A new startDevServer on the same options resumes from the SQLite file. */
  kill(): Promise<void>;
}

/**
 * Starts `temporal server start-dev` on 127.0.0.1 with its state in a SQLite file, and resolves
 * once it answers. Ports are free ones unless given (a restart passes the same ones).
 */
export async function startDevServer(opts: DevServerOptions): Promise<DevServer> {
  const port = opts.port ?? (await freePort());
  const uiPort = opts.uiPort ?? (await freePort());
  const namespace = opts.namespace ?? 'default';
  mkdirSync(path.dirname(opts.dbFile), { recursive: true });
  const args = [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(port),
    '--db-filename',
    opts.dbFile,
    '--namespace',
    namespace,
    '--sqlite-pragma',
    'journal_mode=wal',
    '--log-level',
    'warn',
    // As deploy/temporal/dynamicconfig: a disk's block-job wait handed back with its workflow task.
    '--dynamic-config-value',
    'system.enableActivityEagerExecution=true',
    // The merges' own search attributes (VmId, HostId, SnapshotId, DiskId, MergeOutcome).
    ...(opts.registerSearchAttributes === false ? [] : devServerSearchAttributeArgs()),
    ...(opts.headless ? ['--headless'] : ['--ui-ip', '127.0.0.1', '--ui-port', String(uiPort)]),
  ];
  const child = spawn(temporalBin(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  if (opts.logFile) {
    logChildOutput(child, opts.logFile);
  } else {
    child.stdout?.resume();
    child.stderr?.resume();
  }
  // The end of its stderr: why it exited, when it does at start (e.g. a port in use).
  let tail = '';
  child.stderr?.on('data', (d: Buffer) => (tail = (tail + d.toString()).slice(-4096)));
  const address = `127.0.0.1:${port}`;
  const exited = new Promise<never>((_, reject) =>
    child.once('close', (code, signal) => reject(earlyExit(code, signal, tail, opts.logFile))),
  );
  exited.catch(() => undefined);
  await Promise.race([waitUntilServing(address, 60_000), exited]);

  return {
    address,
    uiUrl: opts.headless ? undefined : `http://127.0.0.1:${uiPort}`,
    namespace,
    process: child,
    options: { ...opts, port, uiPort },
    stop: () => stopProcess(child),
    kill: () => killProcess(child),
  };
}

/**
 * The dev server's exit at start as a set-up failure: its last ERROR (the CLI logs
 * `level=ERROR msg="can't set frontend port 7233: ... bind: address already in use"`).
 */
function earlyExit(code: number | null, signal: string | null, stderr: string, logFile?: string): SetupError {
  const errors = [...stderr.matchAll(/level=ERROR msg="((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]);
  const why = errors.length ? errors[errors.length - 1] : `code ${code}, signal ${signal}`;
  const todo = /address already in use/.test(why) ? 'stop what listens there and run again' : 'see its log';
  return new SetupError(`the Temporal dev server exited at start: ${why}; ${todo} (log: ${logFile ?? 'none'})`);
}

async function waitUntilServing(address: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1000 });
      try {
        await connection.workflowService.getSystemInfo({});
        return;
      } finally {
        await connection.close();
      }
    } catch (err) {
      lastError = err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  throw new Error(`temporal dev server at ${address} did not answer within ${timeoutMs} ms: ${String(lastError)}`);
}

export async function stopProcess(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** SIGKILL, as a crash would end it, and wait for the exit. */
export async function killProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}

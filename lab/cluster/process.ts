import { type ChildProcess, spawn } from 'node:child_process';

import { logChildOutput } from '../devserver/child-log';
import { killProcess, stopProcess } from '../devserver/dev-server';

/** A long-running program of the cluster, its output in a log file; stopped and killed by its pid. */
export interface ClusterProcess {
  name: string;
  child: ChildProcess;
  pid: number;
  logFile: string;
  /** Rejects when the program exits before stop() or kill() asked it to. */
  exited: Promise<never>;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** SIGKILL: a crash. */
  kill(): Promise<void>;
}

export function startProcess(
  name: string,
  argv: string[],
  opts: { logFile: string; env?: NodeJS.ProcessEnv; cwd?: string },
): ClusterProcess {
  const child = spawn(argv[0], argv.slice(1), {
    cwd: opts.cwd,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  logChildOutput(child, opts.logFile);
  let expected = false;
  const exited = new Promise<never>((_, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (!expected) reject(new Error(`${name} exited (code ${code}, signal ${signal}); see ${opts.logFile}`));
    });
  });
  exited.catch(() => undefined);
  if (child.pid === undefined) throw new Error(`${name} did not start: ${argv[0]}`);
  return {
    name,
    child,
    pid: child.pid,
    logFile: opts.logFile,
    exited,
    stop: (graceMs = 10_000) => {
      expected = true;
      return stopProcess(child, graceMs);
    },
    kill: () => {
      expected = true;
      return killProcess(child);
    },
  };
}

/** Polls `check` until it is true, or throws naming `what` after `timeoutMs`. */
export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${what} not reached within ${timeoutMs} ms${last ? `: ${String(last)}` : ''}`);
}

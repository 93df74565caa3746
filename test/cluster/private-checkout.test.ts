import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { Connection } from '@temporalio/client';

import { FRONTEND_TLS_NAME } from '../../lab/cluster/certs';
import { postgresDir, removePostgresDir } from '../../lab/cluster/postgres';
import { MERGE_SEARCH_ATTRIBUTES } from '../../src/config/search-attributes';
import { until } from './harness';

/**
 * `make cluster` from a checkout that only root can enter (issue 20, "Any directory works"): a
 * clone of this repository's HEAD in a fresh `mktemp -d` directory (mode 0700). PostgreSQL runs as
 * the `postgres` user, who cannot enter it: its directory must be elsewhere. The start must print
 * no `level=ERROR` line, the frontend must answer with mTLS, and `make cluster-down` must stop it
 * all and delete PostgreSQL's directory.
 *
 * Cost: about 4 to 6 minutes on this 2-core machine, most of it `npm ci` in the clone (`make
 * cluster` runs `make setup`; about 1 to 2 minutes with a warm npm cache) and the cluster's start
 * (about 1 minute); the programs it needs are already built in ~/.cache/live-merge. It commits
 * nothing: it tests HEAD, so commit a change before running it.
 */

const run = promisify(execFile);
const TEN_MINUTES = 600_000;

/** The output of `child` (stdout and stderr together), as it grows. */
function collect(child: ChildProcess): { text: () => string } {
  let text = '';
  child.stdout?.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (text += d.toString()));
  return { text: () => text };
}

function exitOf(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** `signal` to the process group of `child` (make, npx, the launcher and what it started). */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // gone
  }
}

/** A PostgreSQL that a failed run left running on `pgDir`: stopped (SIGQUIT, its immediate shutdown) before its dir goes. */
function stopPostgres(pgDir: string): void {
  const pidFile = path.join(pgDir, 'data', 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  try {
    process.kill(Number(readFileSync(pidFile, 'utf8').split('\n')[0]), 'SIGQUIT');
  } catch {
    // gone
  }
}

/** The first group of `pattern` in make cluster's output. */
function field(output: string, pattern: RegExp): string {
  const m = pattern.exec(output);
  if (!m) throw new Error(`${pattern} not in make cluster's output:\n${output}`);
  return m[1];
}

test(
  'make cluster from a clone in a mktemp -d directory: up with no ERROR line, the frontend answers, make cluster-down cleans up',
  async () => {
    const repo = execFileSync('git', ['rev-parse', '--show-toplevel'], { cwd: __dirname, encoding: 'utf8' }).trim();
    const tmp = execFileSync('mktemp', ['-d'], { encoding: 'utf8' }).trim();
    const checkout = path.join(tmp, 'live-merge');
    const clusterDir = path.join(checkout, '.lab/cluster');
    const pgDir = postgresDir(clusterDir);
    const env = { ...process.env };
    delete env.LIVE_MERGE_CLUSTER_DIR;
    let make: ChildProcess | undefined;
    let output = { text: () => '' };
    try {
      expect(statSync(tmp).mode & 0o777).toBe(0o700);
      await run('git', ['clone', '-q', repo, checkout]);

      make = spawn('make', ['cluster'], { cwd: checkout, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
      output = collect(make);
      const exited = exitOf(make);
      let early: number | null | undefined;
      void exited.then((code) => (early = code));
      // main.ts prints its closing description (the relay's address, the profile) once all is up.
      await until(async () => {
        if (early !== undefined) throw new Error(`make cluster exited (${early}) before it was up:\n${output.text()}`);
        return /TEMPORAL_PROFILE=cluster/.test(output.text());
      }, TEN_MINUTES - 120_000);
      const text = output.text();
      expect(text).toMatch(/^cluster up \(/m);

      // PostgreSQL's directory: outside the checkout, postgres's; nothing of it inside.
      const postgresUid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
      expect(statSync(pgDir).uid).toBe(postgresUid);
      expect(existsSync(path.join(pgDir, 'data', 'PG_VERSION'))).toBe(true);
      expect(existsSync(path.join(clusterDir, 'pg'))).toBe(false);

      // The frontend answers through the relay, with the CLI's certificate.
      const address = field(text, /from here (127\.0\.0\.1:\d+) \(relay\)/);
      const tls = path.join(clusterDir, 'tls');
      const connection = await Connection.connect({
        address,
        tls: {
          serverNameOverride: FRONTEND_TLS_NAME,
          serverRootCACertificate: readFileSync(path.join(tls, 'ca.pem')),
          clientCertPair: {
            crt: readFileSync(path.join(tls, 'cli.pem')),
            key: readFileSync(path.join(tls, 'cli.key')),
          },
        },
      });
      try {
        const ns = await connection.workflowService.describeNamespace({ namespace: 'default' });
        expect(ns.namespaceInfo?.name).toBe('default');
        expect(Object.values(ns.config?.customSearchAttributeAliases ?? {}).sort()).toEqual(
          MERGE_SEARCH_ATTRIBUTES.map((k) => k.name).sort(),
        );
      } finally {
        await connection.close();
      }
      const ui = field(text, /web ui: +(http:\/\/127\.0\.0\.1:\d+)/);
      expect((await fetch(`${ui}/api/v1/namespaces`)).ok).toBe(true);

      // A healthy start prints no ERROR line (the issue's `level=ERROR ... Namespace default is not found`).
      expect(text.split('\n').filter((l) => /level=ERROR/i.test(l))).toEqual([]);

      const down = await run('make', ['cluster-down'], { cwd: checkout, env, timeout: 180_000 });
      expect(down.stdout).toMatch(/cluster-down: stopped/);
      expect(await exited).toBe(0);
      expect(existsSync(pgDir)).toBe(false);
    } finally {
      if (make && make.exitCode === null && make.signalCode === null) {
        // Not stopped above (a failure): make cluster-down, else the launcher's own stop by SIGTERM.
        await run('make', ['cluster-down'], { cwd: checkout, env, timeout: 180_000 }).catch(() => undefined);
        signalGroup(make, 'SIGTERM');
        await Promise.race([exitOf(make), new Promise((r) => setTimeout(r, 90_000))]);
        signalGroup(make, 'SIGKILL');
      }
      stopPostgres(pgDir);
      removePostgresDir(clusterDir);
      rmSync(tmp, { recursive: true, force: true });
    }
  },
  TEN_MINUTES,
);

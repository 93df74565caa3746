import { execFile, execFileSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { inNetns } from './netns';

const run = promisify(execFile);

export const PG_USER = 'temporal';
export const PG_PASSWORD = 'temporal';
export const PG_PORT = 5432;

/** PostgreSQL's programs: Debian's postgresql keeps them in /usr/lib/postgresql/<major>/bin (the newest is taken). */
function pgBin(name: string): string {
  const root = '/usr/lib/postgresql';
  const majors = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)) : [];
  const newest = majors.sort((a, b) => Number(b) - Number(a))[0];
  return newest ? path.join(root, newest, 'bin', name) : name;
}

function uidOf(user: string): { uid: number; gid: number } {
  const [uid, gid] = ['-u', '-g'].map((f) => Number(execFileSync('id', [f, user], { encoding: 'utf8' }).trim()));
  return { uid, gid };
}

/**
 * The cluster's PostgreSQL: a data directory of its own under `dir`, run by the `postgres` user
 * inside the core network namespace, listening on that namespace's 127.0.0.1 only (only the
 * Temporal services reach it). Start, stop and restart go through pg_ctl, as an operator would.
 */
export class ClusterPostgres {
  readonly dataDir: string;
  readonly logFile: string;
  readonly address = `127.0.0.1:${PG_PORT}`;

  constructor(
    readonly dir: string,
    readonly netns: string,
  ) {
    this.dataDir = path.join(dir, 'data');
    this.logFile = path.join(dir, 'postgresql.log');
  }

  /** initdb once (user `temporal`, password auth over TCP), then start and wait until it accepts connections. */
  async start(): Promise<void> {
    const { uid, gid } = uidOf('postgres');
    if (!existsSync(path.join(this.dataDir, 'PG_VERSION'))) {
      mkdirSync(this.dataDir, { recursive: true });
      chownSync(this.dir, uid, gid);
      chownSync(this.dataDir, uid, gid);
      chmodSync(this.dataDir, 0o700);
      const pwfile = path.join(this.dir, 'pwfile');
      writeFileSync(pwfile, `${PG_PASSWORD}\n`);
      chownSync(pwfile, uid, gid);
      await this.asPostgres([
        pgBin('initdb'),
        ...['-D', this.dataDir, '-U', PG_USER, '--pwfile', pwfile],
        ...['--auth-host', 'scram-sha-256', '--auth-local', 'peer', '--encoding', 'UTF8', '--no-instructions'],
      ]);
      appendFileSync(
        path.join(this.dataDir, 'postgresql.conf'),
        [
          "listen_addresses = '127.0.0.1'",
          `port = ${PG_PORT}`,
          `unix_socket_directories = '${this.dir}'`,
          'max_connections = 200',
          'shared_buffers = 64MB',
          '',
        ].join('\n'),
      );
    }
    await this.pgCtl(['start', '-w', '-t', '60', '-l', this.logFile]);
  }

  /** pg_ctl stop with `mode` (fast: clients disconnected, clean; immediate: like a crash). */
  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    if (!this.running()) return;
    await this.pgCtl(['stop', '-w', '-m', mode]);
  }

  async restart(mode: 'fast' | 'immediate'): Promise<void> {
    await this.pgCtl(['restart', '-w', '-m', mode, '-l', this.logFile]);
  }

  /** pg_isready against the TCP listener the Temporal services use. */
  async ready(): Promise<boolean> {
    const argv = inNetns(this.netns, [pgBin('pg_isready'), '-h', '127.0.0.1', '-p', String(PG_PORT), '-q']);
    try {
      await run(argv[0], argv.slice(1), { timeout: 10_000 });
      return true;
    } catch {
      return false;
    }
  }

  running(): boolean {
    return existsSync(path.join(this.dataDir, 'postmaster.pid'));
  }

  /** The postmaster's pid, from its pid file. */
  pid(): number | undefined {
    try {
      const text = execFileSync('head', ['-1', path.join(this.dataDir, 'postmaster.pid')], { encoding: 'utf8' });
      return Number(text.trim()) || undefined;
    } catch {
      return undefined;
    }
  }

  private pgCtl(args: string[]): Promise<void> {
    return this.asPostgres([pgBin('pg_ctl'), '-D', this.dataDir, ...args]);
  }

  private async asPostgres(argv: string[]): Promise<void> {
    const full = inNetns(this.netns, ['runuser', '-u', 'postgres', '--', ...argv]);
    // pg_ctl start leaves the server running with our pipes unless its output goes elsewhere.
    await run(full[0], full.slice(1), { cwd: this.dir, timeout: 120_000 });
  }
}

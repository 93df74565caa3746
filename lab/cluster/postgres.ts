import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { lastLine, SetupError } from '../setup-error';
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

function postgresUser(): { uid: number; gid: number } {
  try {
    const [uid, gid] = ['-u', '-g'].map((f) =>
      Number(execFileSync('id', [f, 'postgres'], { encoding: 'utf8' }).trim()),
    );
    return { uid, gid };
  } catch {
    throw new SetupError('there is no postgres user: PostgreSQL is not installed; run make setup');
  }
}

/** Where PostgreSQL's directories go: a place every user can reach, whoever owns the checkout. */
export const POSTGRES_PARENT = '/var/tmp';

/**
 * PostgreSQL's directory of the cluster in `clusterDir`: `/var/tmp/live-merge-pg-<hash of
 * clusterDir's path>`, outside the checkout, because PostgreSQL runs as the `postgres` user, who
 * may not enter the checkout (under /root, or a `mktemp -d` directory). One per cluster directory,
 * so two clones never share one; the same on every run of one, so its data stay between runs.
 */
export function postgresDir(clusterDir: string): string {
  const hash = createHash('sha256').update(path.resolve(clusterDir)).digest('hex').slice(0, 12);
  return path.join(POSTGRES_PARENT, `live-merge-pg-${hash}`);
}

/** Deletes PostgreSQL's directory of the cluster in `clusterDir` (stop it first): make cluster-down, the tests. */
export function removePostgresDir(clusterDir: string): void {
  rmSync(postgresDir(clusterDir), { recursive: true, force: true });
}

/**
 * The cluster's PostgreSQL: a directory of its own (`postgresDir`: the data directory, the unix
 * socket and the log), owned by and run as the `postgres` user inside the core network namespace,
 * listening on that namespace's 127.0.0.1 only (only the Temporal services reach it). Start, stop
 * and restart go through pg_ctl, as an operator would.
 */
export class ClusterPostgres {
  readonly dir: string;
  readonly dataDir: string;
  readonly logFile: string;
  readonly address = `127.0.0.1:${PG_PORT}`;

  constructor(
    readonly clusterDir: string,
    readonly netns: string,
  ) {
    this.dir = postgresDir(clusterDir);
    this.dataDir = path.join(this.dir, 'data');
    this.logFile = path.join(this.dir, 'postgresql.log');
  }

  /** initdb once (user `temporal`, password auth over TCP), then start and wait until it accepts connections. */
  async start(): Promise<void> {
    const { uid, gid } = postgresUser();
    const initdb = pgBin('initdb');
    if (!existsSync(initdb)) {
      throw new SetupError(
        "PostgreSQL's server programs (/usr/lib/postgresql/<major>/bin) are not installed: run make setup",
      );
    }
    this.ownDir(uid, gid);
    if (!existsSync(path.join(this.dataDir, 'PG_VERSION'))) {
      rmSync(this.dataDir, { recursive: true, force: true }); // what an initdb that failed left
      mkdirSync(this.dataDir, { mode: 0o700 });
      chownSync(this.dataDir, uid, gid);
      const pwfile = path.join(this.dir, 'pwfile');
      rmSync(pwfile, { force: true });
      writeFileSync(pwfile, `${PG_PASSWORD}\n`, { mode: 0o600, flag: 'wx' });
      chownSync(pwfile, uid, gid);
      try {
        await this.asPostgres([
          initdb,
          ...['-D', this.dataDir, '-U', PG_USER, '--pwfile', pwfile],
          ...['--auth-host', 'scram-sha-256', '--auth-local', 'peer', '--encoding', 'UTF8', '--no-instructions'],
        ]);
      } catch (err) {
        rmSync(this.dataDir, { recursive: true, force: true });
        throw new SetupError(
          `PostgreSQL's initdb (as the postgres user, in ${this.dataDir}) failed: ${lastLine(err)}; fix that and run make cluster again`,
          { cause: err },
        );
      } finally {
        rmSync(pwfile, { force: true });
      }
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
    try {
      await this.pgCtl(['start', '-w', '-t', '60', '-l', this.logFile]);
    } catch (err) {
      throw new SetupError(
        `PostgreSQL did not start (${this.logReason() ?? lastLine(err)}; its log: ${this.logFile}); if one still runs on ${this.dataDir}, make cluster-down stops it`,
        { cause: err },
      );
    }
  }

  /** The last FATAL line of PostgreSQL's log, the reason it did not start (pg_ctl says only "could not start server"). */
  private logReason(): string | undefined {
    try {
      const fatal = readFileSync(this.logFile, 'utf8')
        .split('\n')
        .filter((l) => l.includes('FATAL:'));
      return fatal.length ? fatal[fatal.length - 1].slice(fatal[fatal.length - 1].indexOf('FATAL:')) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Makes `dir` PostgreSQL's: created (mode 0700) or taken over when it is a directory of root's or
   * postgres's, never followed when it is a link; a note in it names the cluster it serves.
   */
  private ownDir(uid: number, gid: number): void {
    let created = true;
    try {
      mkdirSync(this.dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new SetupError(`cannot create PostgreSQL's directory ${this.dir}: ${String(err)}`, { cause: err });
      }
      created = false;
    }
    const st = lstatSync(this.dir);
    if (!st.isDirectory() || (st.uid !== 0 && st.uid !== uid)) {
      throw new SetupError(
        `${this.dir} is not a directory of root's or postgres's: remove it and run make cluster again`,
      );
    }
    if (created)
      writeFileSync(path.join(this.dir, 'cluster-dir'), `${path.resolve(this.clusterDir)}\n`, { flag: 'wx' });
    chownSync(this.dir, uid, gid);
    chmodSync(this.dir, 0o700);
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
    // pg_ctl start leaves the server running with our pipes unless its output goes elsewhere. The
    // working directory is postgres's own: it may not enter the checkout.
    await run(full[0], full.slice(1), { cwd: this.dir, timeout: 120_000 });
  }
}

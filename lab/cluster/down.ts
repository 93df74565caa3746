/**
 * make cluster-down: stops the cluster `make cluster` started, by the pids in its state file.
 * SIGTERM to the launcher, which stops everything in order; if it is gone, SIGTERM to each
 * process it recorded, PostgreSQL by pg_ctl, and the namespaces deleted. Then PostgreSQL's
 * directory (lab/cluster/postgres.ts, outside the checkout) is deleted: the next make cluster
 * starts on a new database.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';

import { reportFailure } from '../setup-error';
import { deleteClusterNetwork } from './netns';
import { ClusterPostgres, removePostgresDir } from './postgres';
import { clusterStateSchema, STATE_FILE } from './state';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function gone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  return !alive(pid);
}

/** Deletes PostgreSQL's directory of the cluster in `dir` (outside the checkout), unless PostgreSQL still runs there. */
function removeDatabase(dir: string): string {
  const pg = new ClusterPostgres(dir, '');
  if (!existsSync(pg.dir)) return '';
  if (pg.running()) return `; PostgreSQL still runs on ${pg.dataDir}: left alone`;
  removePostgresDir(dir);
  return `; deleted ${pg.dir}`;
}

async function main(): Promise<void> {
  if (!existsSync(STATE_FILE)) {
    // Stopped by Ctrl-C: PostgreSQL's directory stayed for the next run.
    const removed = removeDatabase(path.resolve(process.env.LIVE_MERGE_CLUSTER_DIR ?? '.lab/cluster'));
    console.log(`cluster-down: no cluster is running (no state file)${removed}`);
    return;
  }
  const state = clusterStateSchema.parse(JSON.parse(readFileSync(STATE_FILE, 'utf8')));
  if (alive(state.pid)) {
    process.kill(state.pid, 'SIGTERM');
    if (await gone(state.pid, 60_000)) {
      console.log(`cluster-down: stopped (launcher pid ${state.pid})${removeDatabase(state.dir)}`);
      return;
    }
  }
  for (const [name, pid] of Object.entries(state.pids)) {
    if (name === 'postgresql' || !alive(pid)) continue;
    process.kill(pid, 'SIGTERM');
    if (!(await gone(pid, 10_000))) process.kill(pid, 'SIGKILL');
  }
  const core = state.netns[0];
  await new ClusterPostgres(state.dir, core).stop('fast').catch(() => undefined);
  deleteClusterNetwork({ coreNetns: core, hosts: state.netns.slice(1).map((netns) => ({ netns })) });
  rmSync(STATE_FILE, { force: true });
  console.log(`cluster-down: stopped the recorded processes, deleted the namespaces${removeDatabase(state.dir)}`);
}

main().catch((err: unknown) => {
  reportFailure('make cluster-down', err);
  process.exit(1);
});

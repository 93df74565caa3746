/**
 * make cluster: the production topology on this machine (lab/cluster/cluster.ts), up until Ctrl-C
 * (or `make cluster-down`, which signals this process by the pid in the state file). Prints the
 * addresses, the Web UI link and how to reach the frontend with the Temporal CLI. A set-up
 * failure prints one line (lab/setup-error.ts).
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

import { reportFailure, SetupError } from '../setup-error';
import { destroyLabVm } from '../vm';
import { Cluster } from './cluster';
import { describeCluster } from './describe';
import { createHostLabVm } from './lab-vm';
import { removePostgresDir } from './postgres';
import { clusterStateSchema, STATE_FILE } from './state';
import { startWebUi } from './web-ui';

/** The launcher of a cluster that runs from this checkout, by its state file; undefined when none does. */
function runningLauncher(): number | undefined {
  if (!existsSync(STATE_FILE)) return undefined;
  try {
    const { pid } = clusterStateSchema.parse(JSON.parse(readFileSync(STATE_FILE, 'utf8')));
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const running = runningLauncher();
  if (running !== undefined) {
    throw new SetupError(`a cluster from this checkout already runs (pid ${running}): make cluster-down stops it`);
  }
  const dir = path.resolve(process.env.LIVE_MERGE_CLUSTER_DIR ?? '.lab/cluster');
  const fresh = process.argv.includes('--fresh');
  if (fresh) {
    rmSync(dir, { recursive: true, force: true });
    removePostgresDir(dir);
  }
  mkdirSync(dir, { recursive: true });
  const hostIds = ['host1', 'host2', 'host3'];
  const cluster = await Cluster.start({ dir, hostIds, engines: 2 }, (s) => console.log(s.replace(/^/gm, '  ')));
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    console.log('stopping the cluster');
    await ui?.stop().catch(() => undefined);
    for (const host of cluster.hosts.values())
      await destroyLabVm(host.runDir, `vm-${host.hostId}`).catch(() => undefined);
    await cluster.stop();
    rmSync(STATE_FILE, { force: true });
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
  const ui = await startWebUi(cluster).catch((err: unknown) => {
    console.log(`  web ui: not started (${String(err)})`);
    return undefined;
  });
  for (const host of cluster.hosts.values()) {
    // One lab VM per host, paused with no guest (cheap), to merge its snapshots.
    await createHostLabVm(host, {
      vmId: `vm-${host.hostId}`,
      disks: 2,
      volumes: 3,
      layerDataMiB: 4,
      sizeMiB: 32,
    }).catch((err: unknown) => console.log(`  lab VM on ${host.hostId}: ${String(err)}`));
  }
  writeFileSync(
    STATE_FILE,
    `${JSON.stringify({ pid: process.pid, dir, pids: cluster.pids(), netns: [cluster.net.coreNetns, ...cluster.net.hosts.map((h) => h.netns)] }, null, 2)}\n`,
  );
  console.log(describeCluster(cluster, ui?.url));
}

main().catch((err: unknown) => {
  reportFailure('make cluster', err);
  process.exit(1);
});

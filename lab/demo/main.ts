/**
 * `make demo`: a whole live merge on this machine. Starts the Temporal dev server (SQLite file,
 * Web UI on), the engine worker and a host agent as processes, and a lab VM with 2 disks × 3
 * volumes of data whose guest writes to both disks throughout; starts a LiveMergeWorkflow with the
 * Temporal CLI that removes a snapshot from both disks (disk0: intermediate commit; disk1: active
 * commit with pivot); shows its progress, then the chains before and after, the data verification,
 * the guest's writes during the merge and the check that finds every one, and the Web UI link.
 * `--keep` leaves everything running until Ctrl-C. `--libvirt`: the same merge on a libvirt domain
 * (its guest writing too) through a host agent with `--driver libvirt` (lab/demo/libvirt.ts).
 * `--stopped`: the VM is shut off first, and the snapshot removed offline (lab/demo/stopped.ts).
 * A set-up failure prints one line (lab/setup-error.ts).
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { Client, Connection, WorkflowFailedError } from '@temporalio/client';
import { z } from 'zod';

import { ENGINE_TASK_QUEUE, hostTaskQueue } from '../../src/config/names';
import { volumePath } from '../../src/domain/layout';
import { type DevServer, startDevServer } from '../devserver/dev-server';
import { freePort } from '../devserver/free-port';
import { temporalBin } from '../devserver/temporal-bin';
import { startWorkerProcess, type WorkerProcess } from '../devserver/worker-process';
import { checkGuestWrites, waitForGuestAcks } from '../guest';
import { reportFailure } from '../setup-error';
import { destroyLabVm, stopLabVm, verifyLabVm } from '../vm';
import { libvirtDemo } from './libvirt';
import { createDemoVm, type DemoVariant, runDemoMerge } from './merge';
import { acksPerDisk, renderChains, renderGuestCheck, renderVerification } from './render';
import { stoppedDemo } from './stopped';

/** The guest's writes per second over both disks: each dirties a 64 KiB cluster, far below the merge's speed. */
const GUEST_RATE = 100;

const flagsSchema = z.object({
  keep: z.boolean(),
  libvirt: z.boolean(),
  stopped: z.boolean(),
  dataMib: z.coerce.number().int().min(1).max(256),
  bandwidthMib: z.coerce.number().int().min(0).max(4096),
});

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      keep: { type: 'boolean', default: false },
      libvirt: { type: 'boolean', default: false },
      stopped: { type: 'boolean', default: false },
      'data-mib': { type: 'string', default: '48' },
      'bandwidth-mib': { type: 'string', default: '32' },
    },
  });
  const flags = flagsSchema.parse({
    keep: values.keep,
    libvirt: values.libvirt,
    stopped: values.stopped,
    dataMib: values['data-mib'],
    bandwidthMib: values['bandwidth-mib'],
  });
  const work = path.resolve('.lab/demo');
  const storageRoot = path.join(work, 'storage');
  const runDir = path.join(work, 'run');
  const vmId = 'demo-vm';
  const hostId = 'host1';
  const snapshotId = `snap-${Date.now().toString(36)}`;

  if (existsSync(path.join(runDir, vmId))) await destroyLabVm(runDir, vmId).catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });

  const cleanups: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const c of cleanups.splice(0).reverse()) await c().catch((err) => console.error('cleanup:', err));
  };
  // Ctrl-C (or a kill) mid-run still stops the VM, the workers and the server.
  const interrupted = () => {
    if (flags.keep && cleanups.length > 0) return;
    console.log('\ninterrupted: stopping everything');
    void stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    const binary = temporalBin();
    const ports = await defaultOrFreePorts();
    step(`starting the Temporal dev server (state in ${path.join(work, 'temporal.sqlite')})`);
    const server: DevServer = await startDevServer({
      dbFile: path.join(work, 'temporal.sqlite'),
      logFile: path.join(work, 'server.log'),
      ...ports,
    });
    cleanups.push(() => server.stop());
    console.log(`  frontend ${server.address}, Web UI ${server.uiUrl}`);

    const connection = await Connection.connect({ address: server.address });
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace: server.namespace });

    step('starting the engine worker and the host agent (src/worker.ts)');
    const common = { address: server.address, namespace: server.namespace, client };
    const engine: WorkerProcess = await startWorkerProcess({
      ...common,
      args: ['--role', 'engine'],
      taskQueue: ENGINE_TASK_QUEUE,
      logFile: path.join(work, 'engine.log'),
    });
    cleanups.push(() => engine.stop());
    const agent: WorkerProcess = await startWorkerProcess({
      ...common,
      args: [
        ...['--role', 'host', '--host-id', hostId, '--storage-root', storageRoot, '--run-dir', runDir],
        ...(flags.libvirt ? ['--driver', 'libvirt'] : []),
      ],
      taskQueue: hostTaskQueue(hostId),
      logFile: path.join(work, `host-${hostId}.log`),
    });
    cleanups.push(() => agent.stop());
    const mergeOpts = { server, client, binary, work, vmId, hostId, snapshotId, bandwidthMib: flags.bandwidthMib };
    const variant: DemoVariant = {
      storageRoot,
      runDir,
      vmId,
      dataMib: flags.dataMib,
      guestRate: GUEST_RATE,
      cleanups,
      merge: (disks, beforeStart) => runDemoMerge({ ...mergeOpts, disks, beforeStart }),
    };
    if (flags.stopped) return await stoppedDemo(variant);
    if (flags.libvirt) return await libvirtDemo(variant);

    step(
      `creating lab VM ${vmId}: 2 disks x 3 qcow2 volumes, ${flags.dataMib} MiB of data per layer, its guest writing to both disks (${GUEST_RATE} records/s)`,
    );
    const vm = await createDemoVm(variant);
    cleanups.push(() => destroyLabVm(runDir, vmId));
    await waitForGuestAcks(vm.guest!.ackLog, 20);
    const before = await verifyLabVm(runDir, vmId);
    console.log(renderChains('chains before:', before));
    if (!before.ok) throw new Error(`lab VM data did not verify before the merge:\n${renderVerification(before)}`);

    let acksBefore: number[] = [];
    const { request, outcome, uiLink, vmLink } = await runDemoMerge({
      ...mergeOpts,
      disks: vm.disks,
      beforeStart: async () => {
        acksBefore = await acksPerDisk(vm);
      },
    });
    const duringMerge = (await acksPerDisk(vm)).map((n, i) => n - acksBefore[i]);
    if (!outcome.ok) {
      const cause = outcome.error instanceof WorkflowFailedError ? outcome.error.cause?.message : String(outcome.error);
      console.log(`\nmerge FAILED: ${cause}\nWeb UI: ${uiLink}\nall merges of ${vmId}: ${vmLink}`);
      return 1;
    }

    step('merge completed');
    for (const d of outcome.value.disks) {
      const gone = !existsSync(
        volumePath(storageRoot, d.diskId, request.disks.find((x) => x.diskId === d.diskId)!.topVolumeId),
      );
      console.log(
        `  ${d.diskId}: ${d.outcome} (${d.commitKind} commit), ${d.chainBefore.join(' -> ')}  =>  ${d.chainAfter.join(' -> ')}; top volume file ${gone ? 'deleted' : 'STILL PRESENT'}`,
      );
    }
    const after = await verifyLabVm(runDir, vmId);
    console.log(renderChains('chains before:', before));
    console.log(renderChains('chains after:', after));
    console.log(renderVerification(after));
    const shortened = after.disks.every((d, i) => d.chain.length === before.disks[i].chain.length - 1);
    if (flags.keep) {
      console.log(
        `guest writes during the merge: ${vm.disks.map((d, i) => `${d.diskId} ${duringMerge[i]}`).join(', ')}; the guest writes on ` +
          `(npx tsx lab/cli.ts stop --vm-id ${vmId} --run-dir ${runDir}, then check)`,
      );
      console.log(`\nWeb UI: ${uiLink}\nall merges of ${vmId}: ${vmLink}`);
      if (!after.ok || !shortened) return 1;
      console.log(`\n--keep: the dev server, workers and VM stay up. Logs in ${work}. Ctrl-C to stop everything.`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      return 0;
    }
    // The guest stops (it flushes and powers off) only now, after the merge; then the check.
    const stopped = await stopLabVm(runDir, vmId);
    const check = await checkGuestWrites(runDir, vmId);
    console.log(renderGuestCheck(check, duringMerge, stopped));
    console.log(`\nWeb UI: ${uiLink}\nall merges of ${vmId}: ${vmLink}`);
    return after.ok && shortened && check.ok ? 0 : 1;
  } finally {
    await stopAll();
  }
}

/** The Temporal defaults (7233, UI 8233) when free, so links look familiar; else free ports. */
async function defaultOrFreePorts(): Promise<{ port: number; uiPort: number }> {
  const { createServer } = await import('node:net');
  const isFree = (port: number) =>
    new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
  if ((await isFree(7233)) && (await isFree(8233))) return { port: 7233, uiPort: 8233 };
  return { port: await freePort(), uiPort: await freePort() };
}

function step(text: string): void {
  console.log(`\n==> ${text}`);
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    reportFailure('make demo', err);
    process.exit(1);
  },
);

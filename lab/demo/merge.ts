/** The demo's merge: the request for a lab VM's two disks, started with the Temporal CLI, followed to its end. */
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';

import type { Client } from '@temporalio/client';

import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import type { LiveMergeRequest } from '../../src/domain/input';
import { followMerge } from '../../src/progress/follow';
import { createProgressView } from '../../src/progress/view';
import type { DevServer } from '../devserver/dev-server';
import { createLabVm, type LabDisk } from '../vm';

const run = promisify(execFile);

/** What main.ts gives a demo variant (--libvirt, --stopped): where it runs, and how it merges. */
export interface DemoVariant {
  storageRoot: string;
  runDir: string;
  vmId: string;
  dataMib: number;
  /** The guest's writes per second over both disks. */
  guestRate: number;
  cleanups: Array<() => Promise<void>>;
  merge: (
    disks: Parameters<typeof runDemoMerge>[0]['disks'],
    beforeStart: () => Promise<void>,
  ) => ReturnType<typeof runDemoMerge>;
}

/** The demo's lab VM: 2 disks x 3 qcow2 volumes of `dataMib` MiB per layer, its guest writing to both. */
export function createDemoVm(v: Pick<DemoVariant, 'storageRoot' | 'runDir' | 'vmId' | 'dataMib' | 'guestRate'>) {
  return createLabVm({
    storageRoot: v.storageRoot,
    runDir: v.runDir,
    vmId: v.vmId,
    disks: 2,
    volumes: 3,
    layerDataMiB: v.dataMib,
    sizeMiB: 4 * v.dataMib + 16,
    guest: { rate: v.guestRate },
  });
}

export interface DemoMerge {
  request: LiveMergeRequest;
  outcome: Awaited<ReturnType<typeof followMerge>>;
  uiLink: string;
  vmLink: string;
}

export async function runDemoMerge(opts: {
  server: DevServer;
  client: Client;
  binary: string;
  work: string;
  vmId: string;
  hostId: string;
  snapshotId: string;
  disks: LabDisk[];
  bandwidthMib: number;
  /** Called right before the merge starts (the guest's writes are counted from there). */
  beforeStart?: () => Promise<void>;
}): Promise<DemoMerge> {
  const { server, vmId, snapshotId } = opts;
  const [disk0, disk1] = opts.disks;
  const request: LiveMergeRequest = {
    snapshotId,
    vmId,
    hostId: opts.hostId,
    disks: [
      // disk0: the middle volume into the base, below the active layer: an intermediate commit.
      { diskId: disk0.diskId, baseVolumeId: disk0.volumeIds[0], topVolumeId: disk0.volumeIds[1] },
      // disk1: the active layer into the volume below it: an active commit, then the pivot.
      { diskId: disk1.diskId, baseVolumeId: disk1.volumeIds[1], topVolumeId: disk1.volumeIds[2] },
    ],
    options: { pollIntervalMs: 500, bandwidthBytesPerSec: opts.bandwidthMib * 1024 * 1024 },
  };
  const inputFile = path.join(opts.work, 'merge-input.json');
  writeFileSync(inputFile, JSON.stringify(request, null, 2));
  const workflowId = liveMergeWorkflowId(snapshotId);
  const cliArgs = [
    'workflow',
    'start',
    '--address',
    server.address,
    '--namespace',
    server.namespace,
    '--task-queue',
    ENGINE_TASK_QUEUE,
    '--type',
    'LiveMergeWorkflow',
    '--workflow-id',
    workflowId,
    '--input-file',
    inputFile,
  ];
  console.log(`\n==> starting the merge with the Temporal CLI:\n  temporal ${cliArgs.join(' ')}`);
  await opts.beforeStart?.();
  const started = await run(opts.binary, cliArgs);
  console.log(started.stdout.trim().replace(/^/gm, '  '));

  // One progress bar per disk on a terminal (plain lines in CI and pipes), as `npm run watch` shows.
  const outcome = await followMerge(opts.client, snapshotId, createProgressView(process.stdout));
  const uiLink = `${server.uiUrl}/namespaces/${server.namespace}/workflows/${workflowId}`;
  const vmLink = `${server.uiUrl}/namespaces/${server.namespace}/workflows?query=${encodeURIComponent(`VmId="${vmId}"`)}`;
  return { request, outcome, uiLink, vmLink };
}

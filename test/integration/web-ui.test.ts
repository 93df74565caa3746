import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { CancelledFailure, WorkflowFailedError } from '@temporalio/client';
import { type BrowserContext, chromium, type Page } from 'playwright-core';

import { temporalBin } from '../../lab/devserver/temporal-bin';
import { createLabVm, destroyLabVm } from '../../lab/vm';
import { ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import { MERGE_OUTCOME, VM_ID } from '../../src/config/search-attributes';
import type { LiveMergeRequest } from '../../src/domain/input';
import { auxQmpSocketPath } from '../../src/domain/layout';
import { QmpClient } from '../../src/drivers/qmp/client';
import { queryJobsSchema } from '../../src/drivers/qmp/schemas';
import { LiveMergeWorkflow } from '../../src/workflows';
import { HOST_ID, startTestStack, type TestStack } from '../harness/in-process-stack';

/**
 * The operators' view: real merges on real lab VMs, then the dev server's real Web UI in headless
 * Chromium (Debian's, driven by playwright-core). Finds one VM's merges by its VmId search
 * attribute, opens the merge, sees its disks' children and their outcomes, and each step named in
 * domain words. Screenshots land in test-artifacts/web-ui/.
 */

const MiB = 1024 * 1024;
const ARTIFACTS = path.resolve(__dirname, '../../test-artifacts/web-ui');
const run = promisify(execFile);

let stack: TestStack;
let browser: BrowserContext;
let userDataDir: string;
/** Lab VMs still running, destroyed after the test whatever happens. */
const labVms = new Set<string>();

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  stack = await startTestStack({ headless: false });
  userDataDir = mkdtempSync(path.join(os.tmpdir(), 'lm-chromium-'));
  browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    // Without the background-networking flags Chromium keeps dialling Google on a closed network.
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1400, height: 1000 },
    timezoneId: 'UTC',
  });
}, 120_000);

afterAll(async () => {
  for (const vmId of labVms) await destroyLabVm(stack.runDir, vmId).catch(() => undefined);
  await browser?.close();
  if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  await stack?.close();
});

async function labVm(vmId: string, disks: number) {
  labVms.add(vmId);
  return createLabVm({
    storageRoot: stack.storageRoot,
    runDir: stack.runDir,
    vmId,
    disks,
    volumes: 3,
    layerDataMiB: 8,
    sizeMiB: 48,
    guest: false, // paused, no guest OS: this test needs no writes
  });
}

async function destroyVm(vmId: string) {
  await destroyLabVm(stack.runDir, vmId);
  labVms.delete(vmId);
}

/** Why a workflow that must fail failed (WorkflowFailedError's cause). */
async function failureOf(result: Promise<unknown>): Promise<Error | undefined> {
  const err = await result.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(WorkflowFailedError);
  return (err as WorkflowFailedError).cause;
}

function disk(d: { diskId: string; volumeIds: string[] }, base: number, top: number) {
  return { diskId: d.diskId, baseVolumeId: d.volumeIds[base], topVolumeId: d.volumeIds[top] };
}

function startMerge(request: LiveMergeRequest) {
  return stack.temporal.client.workflow.start(LiveMergeWorkflow, {
    taskQueue: ENGINE_TASK_QUEUE,
    workflowId: liveMergeWorkflowId(String(request.snapshotId)),
    args: [request],
  });
}

/** Resolves once QEMU reports the block job `jobId` running. */
async function jobRunning(aux: QmpClient, jobId: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (
    !(await aux.executeParsed('query-jobs', {}, queryJobsSchema)).some((j) => j.id === jobId && j.status === 'running')
  ) {
    if (Date.now() > deadline) throw new Error(`block job ${jobId} never ran`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `temporal workflow list --query ...` as an operator types it: the ids it lists, sorted. */
async function cliList(query: string): Promise<string[]> {
  const { stdout } = await run(temporalBin(), [
    'workflow',
    'list',
    '--address',
    stack.temporal.server.address,
    '--query',
    query,
    '--output',
    'json',
  ]);
  const rows = JSON.parse(stdout) as Array<{ execution: { workflowId: string } }>;
  return rows.map((r) => r.execution.workflowId).sort();
}

/** `cliList(query)` once the visibility store has caught up (it indexes asynchronously). */
async function eventuallyListed(query: string, ids: string[]): Promise<void> {
  const deadline = Date.now() + 15_000;
  let listed = await cliList(query);
  while (JSON.stringify(listed) !== JSON.stringify(ids) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 250));
    listed = await cliList(query);
  }
  expect(listed).toEqual(ids);
}

async function screenshot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(ARTIFACTS, name) });
}

test("an operator finds one VM's merges by VmId in the Web UI, opens the merge, sees each disk's outcome and steps", async () => {
  // Another VM's merge, cancelled by its operator while its block job runs: outcome `cancelled`.
  // (One lab VM per storage root at a time: this one goes before the next is made.)
  const other = await labVm('vm-other', 1);
  const otherAux = await QmpClient.connect(auxQmpSocketPath(stack.runDir, other.vmId));
  const otherMerge = await startMerge({
    snapshotId: 'snap-other',
    vmId: other.vmId,
    hostId: HOST_ID,
    disks: [disk(other.disks[0], 0, 1)],
    options: { bandwidthBytesPerSec: MiB, pollIntervalMs: 100 },
  });
  await jobRunning(otherAux, 'lm.disk0.d0v1');
  await otherMerge.cancel();
  expect(await failureOf(otherMerge.result())).toBeInstanceOf(CancelledFailure);
  await otherAux.close();
  await destroyVm(other.vmId);

  // The VM under inspection: disk0 merges (intermediate commit), disk1's block job (an active
  // commit) is cancelled in QEMU from outside, so that disk fails and keeps its top volume.
  const vm = await labVm('vm-ui', 2);
  const [d0, d1] = vm.disks;
  const aux = await QmpClient.connect(auxQmpSocketPath(stack.runDir, vm.vmId));
  const merge = await startMerge({
    snapshotId: 'snap-ui',
    vmId: vm.vmId,
    hostId: HOST_ID,
    disks: [disk(d0, 0, 1), disk(d1, 1, 2)],
    options: { bandwidthBytesPerSec: 2 * MiB, pollIntervalMs: 100 },
  });
  await jobRunning(aux, 'lm.disk1.d1v2');
  await aux.execute('block-job-cancel', { device: 'lm.disk1.d1v2' });
  expect((await failureOf(merge.result()))?.message).toMatch(
    /^1 of 2 disks failed: disk1 \(.*Operation canceled; top volume d1v2 kept\)$/,
  );
  await aux.close();
  await destroyVm(vm.vmId);

  // The search attributes, as an operator queries them with the CLI.
  const parent = 'live-merge-snap-ui';
  const child0 = 'live-merge-snap-ui-disk-disk0';
  const child1 = 'live-merge-snap-ui-disk-disk1';
  await eventuallyListed('VmId="vm-ui"', [parent, child0, child1]);
  await eventuallyListed('VmId="vm-ui" AND MergeOutcome="failed"', [parent, child1]);
  await eventuallyListed('VmId="vm-ui" AND DiskId="disk0" AND MergeOutcome="merged"', [child0]);
  await eventuallyListed('MergeOutcome="cancelled"', ['live-merge-snap-other', 'live-merge-snap-other-disk-disk0']);
  const described = await stack.temporal.client.workflow.getHandle(parent).describe();
  expect(described.typedSearchAttributes.get(VM_ID)).toBe('vm-ui');
  expect(described.typedSearchAttributes.get(MERGE_OUTCOME)).toBe('failed');

  const ui = stack.temporal.server.uiUrl!;
  const page = browser.pages()[0] ?? (await browser.newPage());

  // 1. The workflow list filtered by VmId (the query box's filter, as a URL): this VM's merge
  // and its two disks, not the other VM's merge.
  await page.goto(`${ui}/namespaces/default/workflows?query=${encodeURIComponent('VmId="vm-ui"')}`);
  const rows = page.locator('table tbody tr');
  await page.getByRole('link', { name: child1, exact: true }).waitFor();
  await page.getByText('1–3 of 3').waitFor();
  expect(await rows.count()).toBe(3);
  // Each row reads `Select Workflow <id> <status> <id> <run id> <type> <start> <end>`.
  const listed = (await rows.allInnerTexts())
    .map((t) =>
      t
        .replace(/\s+/g, ' ')
        .trim()
        .replace(/^Select Workflow \S+ /, ''),
    )
    .sort();
  expect(listed).toEqual([
    expect.stringMatching(new RegExp(`^Completed ${child0} \\S+ DiskMergeWorkflow `)),
    expect.stringMatching(new RegExp(`^Failed ${parent} \\S+ LiveMergeWorkflow `)),
    expect.stringMatching(new RegExp(`^Failed ${child1} \\S+ DiskMergeWorkflow `)),
  ]);
  expect(await page.innerText('body')).not.toContain('live-merge-snap-other');
  await screenshot(page, '1-merges-of-vm-ui.png');

  // 2. The merge: failed, with one child per disk and each disk's outcome.
  await page.getByRole('link', { name: parent, exact: true }).click();
  await page.getByRole('tab', { name: /^Relationships/ }).click();
  await page.getByRole('link', { name: child0, exact: true }).waitFor();
  const tree = (await page.innerText('main')).replace(/\s+/g, ' ');
  expect(tree).toContain(`Failed Type LiveMergeWorkflow ID ${parent} Child Count 2 `);
  expect(tree).toContain(`Completed DiskMergeWorkflow ${child0} `);
  expect(tree).toContain(`Failed DiskMergeWorkflow ${child1} `);
  await screenshot(page, '2-merge-and-its-disks.png');
  // Its search attributes, as the workflow set them.
  await page.getByRole('tab', { name: /^Search Attributes/ }).click();
  await page.getByText('MergeOutcome').first().waitFor();
  const attributes = (await page.innerText('main')).replace(/\s+/g, ' ');
  for (const [name, value] of [
    ['VmId', 'vm-ui'],
    ['HostId', HOST_ID],
    ['SnapshotId', 'snap-ui'],
    ['MergeOutcome', 'failed'],
  ]) {
    expect(attributes).toMatch(new RegExp(`"?${name}"?:? "?${value}"?`));
  }

  // 3. The merged disk: its steps read as the merge, in domain words. (The UI scrolls inside
  // its own pane, so a taller window, not a full-page shot, shows the event list below the timeline.)
  await page.setViewportSize({ width: 1400, height: 1700 });
  await page.getByRole('tab', { name: /^Relationships/ }).click();
  await page.getByRole('link', { name: child0, exact: true }).click();
  await page.getByText('Completed', { exact: true }).first().waitFor();
  await page.getByText('verify chain of disk0').first().waitFor();
  const steps = await page.innerText('main');
  for (const summary of [
    'commit d0v1 into d0v0 on disk0: start or adopt the block job',
    'wait for block job lm.disk0.d0v1 (intermediate commit)',
    'verify chain of disk0: d0v1 gone, d0v0 present',
    'delete volume d0v1 of disk0',
    'clean up after block job lm.disk0.d0v1',
  ]) {
    expect(steps).toContain(summary);
  }
  await screenshot(page, '3-disk0-merged-steps.png');

  // 4. The failed disk: why, and that its top volume was kept.
  await page.goto(`${ui}/namespaces/default/workflows/${child1}`);
  await page.getByText('Operation canceled').first().waitFor();
  const failedDisk = await page.innerText('main');
  expect(failedDisk).toContain('block job lm.disk1.d1v2 failed in QEMU: Operation canceled; top volume d1v2 kept');
  expect(failedDisk).toContain('wait for block job lm.disk1.d1v2 (active commit, pivot when ready)');
  await screenshot(page, '4-disk1-failed.png');
}, 240_000);

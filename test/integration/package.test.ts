import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { logChildOutput } from '../../lab/devserver/child-log';
import { stopProcess } from '../../lab/devserver/dev-server';
import { waitForPoller } from '../../lab/devserver/worker-process';
import { createLabVm, destroyLabVm, type LabVm, readHeaderChain, verifyLabVm } from '../../lab/vm';
import { ENGINE_TASK_QUEUE, hostJobTaskQueue, hostTaskQueue } from '../../src/config/names';
import { volumePath } from '../../src/domain/layout';
import { HOST_ID } from '../harness/host-id';
import { mergeRequest } from '../harness/merge-request';
import { startTestTemporal, type TestTemporal } from '../harness/temporal';

/**
 * The package as a user gets it: `npm pack` of this checkout, installed into a scratch project
 * outside the repository. The engine worker and the host agent run from that project's
 * `node_modules/.bin/live-merge-worker` (compiled JavaScript, no tsx, nothing of the checkout), and
 * a script that imports only `live-merge` (type-checked against the package's declarations, then
 * run) starts a merge on a lab VM and prints the result; the chain is then read with qemu-img.
 */

const root = path.resolve(__dirname, '../..');
const MINUTE = 60_000;

/** The environment of a child that must not see this checkout: no npm_* of the npm running jest, no NODE_OPTIONS. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) && k !== 'NODE_OPTIONS' && k !== 'INIT_CWD'),
  );
  return { ...env, ...extra };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = cleanEnv()): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, args, { cwd, env, maxBuffer: 64 * 1024 * 1024, timeout: 5 * MINUTE }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

async function ok(file: string, args: string[], cwd: string, env?: NodeJS.ProcessEnv): Promise<string> {
  const r = await run(file, args, cwd, env);
  if (r.code !== 0) throw new Error(`${file} ${args.join(' ')} exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

// The scratch project's one script: it imports only the package root (ESM importing the CommonJS
// package, as engine code in either module system can).
const MERGE_SCRIPT = `import { InvalidMergeRequestError, LiveMergeClient, type LiveMergeRequest, type LiveMergeResult } from 'live-merge';

const request = JSON.parse(process.argv[2]) as LiveMergeRequest;
const merges = await LiveMergeClient.connect(); // TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE
try {
  const refused: unknown = await merges.startMerge({ ...request, snapshotId: '../x' }).catch((err: unknown) => err);
  if (!(refused instanceof InvalidMergeRequestError)) throw new Error('an invalid request was not refused');
  const { started, workflowId } = await merges.startMerge(request);
  const result: LiveMergeResult = await merges.result(request.snapshotId);
  console.log(JSON.stringify({ refused: refused.fields, started, workflowId, result }));
} finally {
  await merges.close();
}
`;

const packDir = mkdtempSync(path.join(os.tmpdir(), 'lm-pack-'));
const scratch = mkdtempSync(path.join(os.tmpdir(), 'lm-scratch-'));
const dir = mkdtempSync(path.join(os.tmpdir(), 'lm-package-'));
const storageRoot = path.join(dir, 'storage');
const runDir = path.join(dir, 'run');
const bin = path.join(scratch, 'node_modules/.bin/live-merge-worker');
const workers: ChildProcess[] = [];
let temporal: TestTemporal | undefined;
let packed: { filename: string; size: number; unpackedSize: number; files: Array<{ path: string }> };
let vm: LabVm | undefined;

/** Starts the installed bin with `args` from the scratch project and resolves once `queues` have a poller. */
async function startInstalledWorker(t: TestTemporal, name: string, args: string[], queues: string[]): Promise<void> {
  const logFile = path.join(dir, `${name}.log`);
  const child = spawn(bin, args, {
    cwd: scratch,
    env: cleanEnv({ TEMPORAL_ADDRESS: t.server.address, TEMPORAL_NAMESPACE: t.server.namespace }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  workers.push(child);
  logChildOutput(child, logFile);
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code) =>
      reject(new Error(`${name} (${bin} ${args.join(' ')}) exited with ${code}:\n${readLog(logFile)}`)),
    ),
  );
  exited.catch(() => undefined);
  for (const q of queues) await Promise.race([waitForPoller(t.client, t.server.namespace, q, 3 * MINUTE), exited]);
}

function readLog(file: string): string {
  return existsSync(file) ? readFileSync(file, 'utf8').slice(-4000) : '(no log)';
}

beforeAll(async () => {
  // prepack builds lib/ afresh; the tarball is what a registry would serve.
  const out = await ok('npm', ['pack', '--json', '--pack-destination', packDir], root);
  [packed] = JSON.parse(out.slice(out.indexOf('[\n'))) as [typeof packed]; // after any output of the build
  writeFileSync(path.join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true }, null, 2));
  // npm 11 runs no install scripts: the package and its dependencies must work without them.
  await ok(
    'npm',
    ['install', path.join(packDir, packed.filename), '--no-audit', '--no-fund', '--prefer-offline'],
    scratch,
  );
  temporal = await startTestTemporal();
  await startInstalledWorker(temporal, 'engine', ['--role', 'engine'], [ENGINE_TASK_QUEUE]);
  await startInstalledWorker(
    temporal,
    'host',
    ['--role', 'host', '--host-id', HOST_ID, '--storage-root', storageRoot, '--run-dir', runDir],
    [hostTaskQueue(HOST_ID), hostJobTaskQueue(HOST_ID)],
  );
}, 15 * MINUTE);

afterAll(async () => {
  try {
    await Promise.allSettled(workers.map((w) => stopProcess(w, 10_000)));
    if (vm) await destroyLabVm(runDir, vm.vmId).catch(() => undefined);
    await temporal?.close();
  } finally {
    for (const d of [packDir, scratch, dir]) rmSync(d, { recursive: true, force: true });
  }
}, 2 * MINUTE);

test('the tarball holds the compiled package only: JavaScript, declarations, the bin; no sources, tests, lab or bench', () => {
  const files = packed.files.map((f) => f.path).sort();
  expect(files.filter((f) => !f.startsWith('lib/'))).toEqual(['README.md', 'package.json']);
  expect(files.filter((f) => !/^lib\/.*\.(js|js\.map|d\.ts)$/.test(f) && f.startsWith('lib/'))).toEqual([]);
  expect(files).toEqual(expect.arrayContaining(['lib/client.js', 'lib/client.d.ts', 'lib/worker.js']));
  const installed = path.join(scratch, 'node_modules/live-merge');
  expect(readFileSync(path.join(installed, 'lib/worker.js'), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
  const manifest = JSON.parse(readFileSync(path.join(installed, 'package.json'), 'utf8')) as Record<string, unknown>;
  expect(manifest.bin).toEqual({ 'live-merge-worker': 'lib/worker.js' });
  expect(Object.keys(manifest.dependencies as object)).not.toContain('tsx');
});

test('only the package root is exported: the client and its error, no deep import', async () => {
  const node = process.execPath;
  const keys = await ok(node, ['-e', "console.log(Object.keys(require('live-merge')).sort().join(','))"], scratch);
  expect(keys.trim()).toBe('InvalidMergeRequestError,LiveMergeClient');
  for (const deep of ['live-merge/lib/client.js', 'live-merge/lib/worker', 'live-merge/package.json']) {
    const r = await run(node, ['--input-type=module', '-e', `await import('${deep}')`], scratch);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('ERR_PACKAGE_PATH_NOT_EXPORTED');
  }
});

test(
  'a script importing only live-merge starts a merge on a lab VM through the installed workers; qemu-img reads the merged chains',
  async () => {
    vm = await createLabVm({
      storageRoot,
      runDir,
      vmId: 'vm-pkg',
      disks: 2,
      volumes: 3,
      layerDataMiB: 2,
      sizeMiB: 18,
      guest: false, // paused, no guest OS: this test needs no writes
    });
    const request = mergeRequest(vm, 'snap-pkg', ['intermediate', 'active'], { pollIntervalMs: 100 });

    // Type-checked against the installed declarations (the exports map's `types`), as a user's build would.
    writeFileSync(path.join(scratch, 'merge.mts'), MERGE_SCRIPT);
    writeFileSync(
      path.join(scratch, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'node16',
          moduleResolution: 'node16',
          strict: true,
          skipLibCheck: true,
          typeRoots: [path.join(root, 'node_modules/@types')],
          types: ['node'],
        },
        files: ['merge.mts'],
      }),
    );
    await ok(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', '.'], scratch);

    const out = await ok(
      process.execPath,
      ['merge.mjs', JSON.stringify(request)],
      scratch,
      cleanEnv({
        TEMPORAL_ADDRESS: temporal!.server.address,
        TEMPORAL_NAMESPACE: temporal!.server.namespace,
      }),
    );
    const { refused, started, workflowId, result } = JSON.parse(out.trim()) as {
      refused: string[];
      started: boolean;
      workflowId: string;
      result: { disks: Array<Record<string, unknown>> };
    };
    expect(refused).toEqual(['snapshotId']);
    expect({ started, workflowId }).toEqual({ started: true, workflowId: 'live-merge-snap-pkg' });
    expect(result.disks).toEqual([
      expect.objectContaining({
        diskId: 'disk0',
        outcome: 'merged',
        commitKind: 'intermediate',
        chainAfter: ['d0v2', 'd0v0'],
        topDeleted: true,
      }),
      expect.objectContaining({
        diskId: 'disk1',
        outcome: 'merged',
        commitKind: 'active',
        chainAfter: ['d1v1', 'd1v0'],
        topDeleted: true,
      }),
    ]);

    // The image headers, as qemu-img reads them: the merged top is out of each chain and deleted.
    const p = (diskId: string, volumeId: string) => volumePath(storageRoot, diskId, volumeId);
    expect(await readHeaderChain(p('disk0', 'd0v2'))).toEqual([p('disk0', 'd0v2'), p('disk0', 'd0v0')]);
    expect(await readHeaderChain(p('disk1', 'd1v1'))).toEqual([p('disk1', 'd1v1'), p('disk1', 'd1v0')]);
    expect(existsSync(p('disk0', 'd0v1'))).toBe(false);
    expect(existsSync(p('disk1', 'd1v2'))).toBe(false);
    const report = await verifyLabVm(runDir, vm.vmId);
    expect(report.disks.map((d) => d.chain)).toEqual([
      ['d0v2', 'd0v0'],
      ['d1v1', 'd1v0'],
    ]);
    expect(report.ok).toBe(true);
  },
  10 * MINUTE,
);

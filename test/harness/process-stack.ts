import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Client, Connection } from '@temporalio/client';

import { type DevServer, startDevServer } from '../../lab/devserver/dev-server';
import { startWorkerProcess, type WorkerProcess } from '../../lab/devserver/worker-process';
import { ENGINE_TASK_QUEUE, hostTaskQueue } from '../../src/config/names';
import { HOST_ID } from './host-id';
import { workflowBundle } from './temporal';

export { HOST_ID };

/**
 * The product as operators run it, one process each, for fault tests: the dev server on its
 * SQLite file, the engine worker and the host agent (the test agent with hold points). Each can
 * be killed like a crash and started again.
 */
export class FaultStack {
  readonly dir = mkdtempSync(path.join(os.tmpdir(), 'lm-fault-'));
  readonly storageRoot = path.join(this.dir, 'storage');
  readonly runDir = path.join(this.dir, 'run');
  readonly holdDir = path.join(this.dir, 'holds');
  server!: DevServer;
  connection!: Connection;
  client!: Client;
  engine?: WorkerProcess;
  host?: WorkerProcess;
  private engineStarts = 0;
  private hostStarts = 0;

  /** `driver: 'libvirt'`: the host agent drives libvirt domains (test/harness/host-agent.ts). */
  constructor(private readonly opts: { driver?: 'qmp' | 'libvirt' } = {}) {}

  async start(opts: { holds?: string[] } = {}): Promise<this> {
    mkdirSync(this.holdDir, { recursive: true });
    await this.startServer();
    this.connection = await Connection.connect({ address: this.server.address });
    this.client = new Client({ connection: this.connection, namespace: this.server.namespace });
    await this.startEngine();
    await this.startHost(opts.holds ?? []);
    return this;
  }

  async startServer(): Promise<void> {
    const previous = this.server?.options;
    this.server = await startDevServer({
      dbFile: path.join(this.dir, 'temporal.sqlite'),
      logFile: path.join(this.dir, 'server.log'),
      headless: true,
      port: previous?.port,
      uiPort: previous?.uiPort,
    });
  }

  async startEngine(): Promise<void> {
    this.engine = await startWorkerProcess({
      ...this.common(),
      args: ['--role', 'engine'],
      taskQueue: ENGINE_TASK_QUEUE,
      logFile: path.join(this.dir, `engine-${this.engineStarts++}.log`),
    });
  }

  /** The host agent; with hold points it stops at them (see test/harness/host-agent.ts). */
  async startHost(holds: string[] = []): Promise<void> {
    const bundle = path.join(this.dir, 'workflow-bundle.js');
    if (!existsSync(bundle)) writeFileSync(bundle, (await workflowBundle()).code);
    this.host = await startWorkerProcess({
      ...this.common(),
      entry: path.join(__dirname, 'host-agent.ts'),
      args: [],
      taskQueue: hostTaskQueue(HOST_ID),
      logFile: path.join(this.dir, `host-${this.hostStarts++}.log`),
      env: {
        LIVE_MERGE_HOST_ID: HOST_ID,
        LIVE_MERGE_STORAGE_ROOT: this.storageRoot,
        LIVE_MERGE_RUN_DIR: this.runDir,
        LIVE_MERGE_TEST_HOLDS: holds.join(','),
        LIVE_MERGE_TEST_HOLD_DIR: this.holdDir,
        LIVE_MERGE_DRIVER: this.opts.driver ?? 'qmp',
        LIVE_MERGE_TEST_WORKFLOW_BUNDLE: bundle,
      },
    });
  }

  /**
   * The host agent started again with only `holds`, whatever a test left: stopped (SIGSTOP), held
   * or released at hold points. A test file's afterEach calls it.
   */
  async restartHost(holds: string[] = []): Promise<void> {
    const pid = this.host?.process.pid;
    if (pid !== undefined && this.host?.process.exitCode === null) process.kill(pid, 'SIGCONT');
    await this.host?.kill();
    for (const f of readdirSync(this.holdDir)) rmSync(path.join(this.holdDir, f), { force: true });
    await this.startHost(holds);
  }

  /** Resolves once the host agent reached hold point `point`. */
  async reached(point: string, timeoutMs = 60_000): Promise<void> {
    const file = path.join(this.holdDir, point.replace(':', '-'));
    const deadline = Date.now() + timeoutMs;
    while (!existsSync(file)) {
      if (Date.now() > deadline) throw new Error(`host agent never reached ${point}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /** Lets the host agent go on from hold point `point`. */
  release(point: string): void {
    writeFileSync(path.join(this.holdDir, `release-${point.replace(':', '-')}`), '');
  }

  /** Makes hold point `point` hold again (and forgets that it was reached). */
  unrelease(point: string): void {
    rmSync(path.join(this.holdDir, point.replace(':', '-')), { force: true });
    rmSync(path.join(this.holdDir, `release-${point.replace(':', '-')}`), { force: true });
  }

  async close(): Promise<void> {
    await this.host?.stop().catch(() => undefined);
    await this.engine?.stop().catch(() => undefined);
    await this.connection?.close().catch(() => undefined);
    await this.server?.stop().catch(() => undefined);
    if (!process.env.LIVE_MERGE_KEEP_FAULT_DIRS) rmSync(this.dir, { recursive: true, force: true });
  }

  private common() {
    return { address: this.server.address, namespace: this.server.namespace, client: this.client };
  }
}

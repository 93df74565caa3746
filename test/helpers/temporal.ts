import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Client, Connection } from '@temporalio/client';
import {
  bundleWorkflowCode,
  DefaultLogger,
  NativeConnection,
  Runtime,
  type WorkflowBundleWithSourceMap,
} from '@temporalio/worker';

import { type DevServer, startDevServer } from '../../lab/devserver/dev-server';
import { WORKFLOW_BUNDLER_OPTIONS, workflowsPath } from '../../src/workers/workflow-bundle';

let bundle: Promise<WorkflowBundleWithSourceMap> | undefined;
let runtimeInstalled = false;

/** The workflow bundle, built once per jest worker process. */
export function workflowBundle(): Promise<WorkflowBundleWithSourceMap> {
  bundle ??= bundleWorkflowCode({
    workflowsPath: workflowsPath(),
    preloadModules: [...WORKFLOW_BUNDLER_OPTIONS.preloadModules],
    logger: new DefaultLogger('WARN'),
  });
  return bundle;
}

export interface TestTemporal {
  server: DevServer;
  dir: string;
  client: Client;
  connection: NativeConnection;
  clientConnection: Connection;
  close(): Promise<void>;
}

/** A real Temporal dev server on free ports with its SQLite file in a temp dir, and clients. */
export async function startTestTemporal(
  opts: { headless?: boolean; registerSearchAttributes?: boolean } = {},
): Promise<TestTemporal> {
  if (!runtimeInstalled) {
    Runtime.install({ logger: new DefaultLogger('WARN') });
    runtimeInstalled = true;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lm-temporal-'));
  const server = await startDevServer({
    dbFile: path.join(dir, 'temporal.sqlite'),
    logFile: path.join(dir, 'server.log'),
    headless: opts.headless ?? true,
    registerSearchAttributes: opts.registerSearchAttributes,
  });
  const clientConnection = await Connection.connect({ address: server.address });
  const connection = await NativeConnection.connect({ address: server.address });
  const client = new Client({ connection: clientConnection, namespace: server.namespace });
  return {
    server,
    dir,
    client,
    connection,
    clientConnection,
    async close() {
      await clientConnection.close();
      await connection.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

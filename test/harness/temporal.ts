import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { bundleWorkflowCode, DefaultLogger, Runtime, type WorkflowBundleWithSourceMap } from '@temporalio/worker';

import { type ConnectedDevServer, startConnectedDevServer } from '../../lab/devserver/connected';
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

export interface TestTemporal extends ConnectedDevServer {
  dir: string;
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
  const connected = await startConnectedDevServer(dir, opts);
  return {
    ...connected,
    dir,
    async close() {
      await connected.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

import type * as BandwidthModule from '../domain/bandwidth';
import type * as InputModule from '../domain/input';

/**
 * The zod schemas workflow code checks its inputs with (and `describeIssues`), built once per
 * worker thread and shared by every workflow it runs, instead of once per workflow run.
 *
 * The SDK's reusable V8 context gives each workflow run its own copy of every bundled module, so
 * building the schemas at module scope cost each run about 2 ms of CPU and its own copy in memory.
 * This module is preloaded (see workers/workflow-bundle.ts): it lives in the context's shared
 * module cache, and holds the schema modules it loads on first use. It imports nothing at module
 * scope but types: whatever a preloaded module imports is shared too and frozen, and zod fills
 * parts of a schema lazily, which a frozen schema refuses. A built schema is immutable and
 * deterministic, so one run's use cannot affect another's. Workflow code must take these modules'
 * values from here, never import them itself (type imports are fine).
 */
export interface WorkflowSchemas {
  input: typeof InputModule;
  bandwidth: typeof BandwidthModule;
}

let built: WorkflowSchemas | undefined;

export function schemas(): WorkflowSchemas {
  /* eslint-disable @typescript-eslint/no-require-imports */
  built ??= {
    input: require('../domain/input') as typeof InputModule,
    bandwidth: require('../domain/bandwidth') as typeof BandwidthModule,
  };
  /* eslint-enable @typescript-eslint/no-require-imports */
  return built;
}

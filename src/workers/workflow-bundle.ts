/**
 * How the workflow code is bundled, for the engine worker, the tests and the benchmarks alike.
 *
 * zod is loaded once into the worker's reusable V8 context instead of once per workflow run: it is
 * a sixth of the bundle, and evaluating it made every workflow's first task about 7 ms slower.
 * zod holds no per-run state (its registry only maps schemas it is given, weakly), so sharing it
 * cannot leak one workflow into another. Only modules like that may be listed: a preloaded
 * module's exports are frozen, so one that exported schema instances (which zod initialises
 * lazily) would break.
 */
export const WORKFLOW_BUNDLER_OPTIONS = { preloadModules: ['zod'] } as const satisfies { preloadModules: string[] };

export const workflowsPath = (): string => require.resolve('../workflows');

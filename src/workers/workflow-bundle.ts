/**
 * How the workflow code is bundled, for the engine worker, the tests and the benchmarks alike.
 *
 * Two modules are loaded once into the worker's reusable V8 context and shared by every workflow
 * run, instead of once per run: zod (a sixth of the bundle; evaluating it made every workflow's
 * first task about 7 ms slower) and the workflows' schema holder (workflows/schemas.ts, which
 * says why it is safe). A preloaded module and all it imports are frozen; only modules that keep
 * no per-run state and export nothing zod must still fill in may be listed: zod itself, which
 * keeps no such state (its registry only maps, weakly, the schemas it is given), and a module
 * that exports functions only.
 */
export const WORKFLOW_BUNDLER_OPTIONS = {
  preloadModules: ['zod', require.resolve('../workflows/schemas')],
} as const satisfies { preloadModules: string[] };

export const workflowsPath = (): string => require.resolve('../workflows');

import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';

import { WORKFLOW_BUNDLER_OPTIONS } from '../../src/workers/workflow-bundle';

/**
 * Workflow code takes its zod schemas from the preloaded holder (src/workflows/schemas.ts), built
 * once per worker thread. A value import of a schema module anywhere in workflow code would build
 * them again in every workflow run, silently: this guards it.
 */
const WORKFLOWS = path.resolve(__dirname, '../../src/workflows');
const SCHEMA_MODULES = ['../domain/input', '../domain/bandwidth'];

test('the schema holder is preloaded into the workflow context', () => {
  expect(WORKFLOW_BUNDLER_OPTIONS.preloadModules).toContain(path.join(WORKFLOWS, 'schemas.ts'));
});

test.each(readdirSync(WORKFLOWS).filter((f) => f.endsWith('.ts') && f !== 'schemas.ts'))(
  '%s imports schema modules for types only',
  (file) => {
    const source = readFileSync(path.join(WORKFLOWS, file), 'utf8');
    const valueImports = [...source.matchAll(/^import\s+(?!type\b)([^;]*?)\s+from\s+'([^']+)';/gms)]
      .filter((m) => SCHEMA_MODULES.includes(m[2]))
      // `import { type A, type B } from` is a type import too.
      .filter((m) => !/^\{\s*(type\s+\w+\s*,?\s*)+\}$/.test(m[1]));
    expect(valueImports.map((m) => m[0])).toEqual([]);
  },
);

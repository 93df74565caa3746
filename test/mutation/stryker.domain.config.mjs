/**
 * The second mutation set: the input schemas, the path layout and the adaptive speed's controller
 * (src/domain/). A zod schema is
 * built once, when its module loads, so its mutants are static: the main set ignores static
 * mutants (each would rerun every test), and here they are tested, against the modules' own tests.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const base = require('../../stryker.config.json');

export default {
  ...base,
  mutate: ['src/domain/input.ts', 'src/domain/layout.ts', 'src/domain/speed.ts'],
  ignoreStatic: false,
  jest: { ...base.jest, configFile: 'test/mutation/jest.domain.config.js' },
  incrementalFile: 'test/mutation/stryker-incremental-domain.json',
  htmlReporter: { fileName: 'test-artifacts/mutation/domain/index.html' },
  jsonReporter: { fileName: 'test-artifacts/mutation/domain/mutation.json' },
};

/**
 * The guard set: who uses a volume (src/host/usage/): the image index, open files and locks in
 * /proc, the QMP socket's owner, and the rules that turn them into a refusal.
 * Its own record, so that a whole run of it fits in an hour and one set's run leaves the others'
 * records as they are.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const base = require('../../stryker.config.json');

export default {
  ...base,
  mutate: ['src/host/usage/*.ts', '!src/host/usage/index.ts'],
  incrementalFile: 'test/mutation/stryker-incremental-guard.json',
  htmlReporter: { fileName: 'test-artifacts/mutation/guard/index.html' },
  jsonReporter: { fileName: 'test-artifacts/mutation/guard/mutation.json' },
};

/**
 * The guard set: who uses a volume (src/volume-users/): the image index, open files and locks in
 * /proc, the QMP socket's owner (drivers/qmp/qmp-pid.ts, whose pids the guard allows), and the rules
 * that turn them into a refusal.
 * Its own record, so that a whole run of it fits in an hour and one set's run leaves the others'
 * records as they are.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const base = require('../../stryker.config.json');

export default {
  ...base,
  mutate: ['src/volume-users/*.ts', '!src/volume-users/index.ts', 'src/procfs/*.ts', 'src/drivers/qmp/qmp-pid.ts'],
  jest: { ...base.jest, configFile: 'test/mutation/jest.guard.config.js' },
  incrementalFile: 'test/mutation/stryker-incremental-guard.json',
  htmlReporter: { fileName: 'test-artifacts/mutation/guard/index.html' },
  jsonReporter: { fileName: 'test-artifacts/mutation/guard/mutation.json' },
};

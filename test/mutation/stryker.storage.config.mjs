/**
 * The storage set: what reads images and removes files outside QEMU: the names an image holds
 * (image-names, the header reader), the commit's space bound, the reclaim sweep, the tombstones,
 * the pivot records and the speed records.
 * Its own record, so that a whole run of it fits in an hour and one set's run leaves the others'
 * records as they are.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const base = require('../../stryker.config.json');

export default {
  ...base,
  mutate: [
    'src/storage/image-names.ts',
    'src/storage/qemu-img.ts',
    'src/storage/space.ts',
    'src/storage/reclaim.ts',
    'src/storage/tombstone.ts',
    'src/storage/header-chain.ts',
    'src/storage/pivot-record.ts',
    'src/storage/hidden-record.ts',
    'src/storage/speed-record.ts',
  ],
  jest: { ...base.jest, configFile: 'test/mutation/jest.storage.config.js' },
  incrementalFile: 'test/mutation/stryker-incremental-storage.json',
  htmlReporter: { fileName: 'test-artifacts/mutation/storage/index.html' },
  jsonReporter: { fileName: 'test-artifacts/mutation/storage/mutation.json' },
};

/**
 * The tests StrykerJS runs against the storage set's mutants (stryker.storage.config.mjs): the
 * base list, and the tests written for this set alone, so that adding one leaves the other sets'
 * records standing.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS config, like jest.config.js
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  displayName: 'mutation-storage',
  testMatch: [
    ...base.testMatch,
    '<rootDir>/test/unit/image-names-nodes.test.ts',
    '<rootDir>/test/unit/qemu-img-bounds.test.ts',
    '<rootDir>/test/unit/header-chain.test.ts',
    '<rootDir>/test/unit/pivot-record.test.ts',
    '<rootDir>/test/unit/hidden-record.test.ts',
  ],
};

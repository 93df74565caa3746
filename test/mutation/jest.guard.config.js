/**
 * The tests StrykerJS runs against the guard set's mutants (stryker.guard.config.mjs): the base
 * list, and the tests written for this set alone, so that adding one leaves the other sets'
 * records standing.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS config, like jest.config.js
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  displayName: 'mutation-guard',
  testMatch: [...base.testMatch, '<rootDir>/test/unit/dependants-outside.test.ts'],
};

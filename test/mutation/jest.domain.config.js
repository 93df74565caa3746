/**
 * The tests StrykerJS runs against the mutants of the schemas and paths (stryker.domain.config.mjs):
 * their own unit tests. Nearly every other test builds these schemas or paths too, so a mutant run
 * against the whole set would cost a minute; these files say everything the modules promise.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS config, like jest.config.js
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  displayName: 'mutation-domain',
  testMatch: [
    '<rootDir>/test/unit/input.test.ts',
    '<rootDir>/test/unit/input-bounds.test.ts',
    '<rootDir>/test/unit/layout.test.ts',
    '<rootDir>/test/unit/speed.test.ts',
  ],
};

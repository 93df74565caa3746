/**
 * The tests StrykerJS runs against the libvirt set's mutants (stryker.libvirt.config.mjs): the
 * libvirt driver and its readers against a virsh that answers from files. No other test reaches
 * that code (the rest run on QmpDriver or the simulator), so the set's dry run is these alone.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS config, like jest.config.js
const base = require('./jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  displayName: 'mutation-libvirt',
  testMatch: [
    '<rootDir>/test/unit/libvirt-parse.test.ts',
    '<rootDir>/test/unit/libvirt-parse-strict.test.ts',
    '<rootDir>/test/unit/libvirt-block-job-info.test.ts',
    '<rootDir>/test/unit/libvirt-driver.test.ts',
    '<rootDir>/test/unit/libvirt-driver-two-disks.test.ts',
    '<rootDir>/test/unit/libvirt-job-records.test.ts',
    '<rootDir>/test/unit/libvirt-redefine.test.ts',
    '<rootDir>/test/unit/libvirt-offline.test.ts',
  ],
};

/**
 * The tests StrykerJS runs against each mutant (npm run mutate): the fast ones that need no guest
 * and no Temporal server: the activities on the simulated driver and real qcow2 files; the guard
 * and QmpDriver's readers on real images, processes and one paused QEMU per file (-S, no guest);
 * the guard's scans and rules one by one, on real files, a fake /proc and the real one;
 * DiskMergeWorkflow's steps with the workflow API stubbed. The same refusals on a full lab VM
 * (test/qemu/guards.test.ts) run in `make test`: a lab VM per mutant costs seconds.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS config, like jest.config.js
const base = require('../../jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  rootDir: '../..',
  roots: ['<rootDir>/test'],
  testMatch: [
    '<rootDir>/test/unit/activities.test.ts',
    '<rootDir>/test/unit/set-block-job-speed.test.ts',
    '<rootDir>/test/unit/volume-users.test.ts',
    '<rootDir>/test/unit/disk-merge-steps.test.ts',
    '<rootDir>/test/unit/volume-guard.test.ts',
    '<rootDir>/test/unit/delete-volume.test.ts',
    '<rootDir>/test/unit/verify-chain.test.ts',
    '<rootDir>/test/unit/merge-start.test.ts',
    '<rootDir>/test/unit/qmp-driver-readers.test.ts',
    '<rootDir>/test/unit/qmp-client.test.ts',
    '<rootDir>/test/unit/convergence.test.ts',
    '<rootDir>/test/unit/image-index.test.ts',
    '<rootDir>/test/unit/names.test.ts',
    '<rootDir>/test/unit/proc-fds.test.ts',
    '<rootDir>/test/unit/proc-locks.test.ts',
    '<rootDir>/test/unit/usage-rules.test.ts',
    '<rootDir>/test/unit/block-job-turns.test.ts',
  ],
  reporters: ['default'],
  maxWorkers: 1,
};

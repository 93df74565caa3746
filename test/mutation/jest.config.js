/**
 * The tests StrykerJS runs against each mutant (npm run mutate): the fast ones that need no guest
 * and no Temporal server: the activities on the simulated driver and real qcow2 files; the guard
 * and QmpDriver's readers on real images, processes and one paused QEMU per file (-S, no guest);
 * the guard's scans and rules one by one, on real files, a fake /proc and the real one;
 * DiskMergeWorkflow's steps with the workflow API stubbed; the reclaim sweep, tombstones, paths,
 * ids and image names on real files; the libvirt driver against a virsh that answers from files.
 * The same refusals on a full lab VM (test/qemu/guards.test.ts) run in `make test`: a lab VM per
 * mutant costs seconds. One project: the base config's `projects` would run every test three times.
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports -- a CommonJS config, like jest.config.js
const { projects, ...base } = require('../../jest.config.js');

/** @type {import('jest').Config} */
module.exports = {
  ...base,
  ...projects[0],
  displayName: 'mutation',
  testPathIgnorePatterns: ['/node_modules/'],
  rootDir: '../..',
  roots: ['<rootDir>/test'],
  testMatch: [
    '<rootDir>/test/unit/activities.test.ts',
    '<rootDir>/test/unit/set-block-job-speed.test.ts',
    '<rootDir>/test/unit/speed-control.test.ts',
    '<rootDir>/test/unit/volume-users.test.ts',
    '<rootDir>/test/unit/disk-merge-steps.test.ts',
    '<rootDir>/test/unit/pickup.test.ts',
    '<rootDir>/test/unit/keep-alive.test.ts',
    '<rootDir>/test/unit/volume-guard.test.ts',
    '<rootDir>/test/unit/stopped-vm-locks.test.ts',
    '<rootDir>/test/unit/delete-volume.test.ts',
    '<rootDir>/test/unit/verify-chain.test.ts',
    '<rootDir>/test/unit/merge-start.test.ts',
    '<rootDir>/test/unit/offline-steps.test.ts',
    '<rootDir>/test/unit/qmp-driver-readers.test.ts',
    '<rootDir>/test/unit/qmp-client.test.ts',
    '<rootDir>/test/unit/convergence.test.ts',
    '<rootDir>/test/unit/image-index.test.ts',
    '<rootDir>/test/unit/names.test.ts',
    '<rootDir>/test/unit/proc-fds.test.ts',
    '<rootDir>/test/unit/proc-locks.test.ts',
    '<rootDir>/test/unit/usage-rules.test.ts',
    '<rootDir>/test/unit/block-job-turns.test.ts',
    '<rootDir>/test/unit/reclaim.test.ts',
    '<rootDir>/test/unit/tombstone.test.ts',
    '<rootDir>/test/unit/layout.test.ts',
    '<rootDir>/test/unit/input.test.ts',
    '<rootDir>/test/unit/space.test.ts',
    '<rootDir>/test/unit/libvirt-parse.test.ts',
    '<rootDir>/test/unit/libvirt-parse-strict.test.ts',
    '<rootDir>/test/unit/guard-refusals.test.ts',
    '<rootDir>/test/unit/libvirt-driver.test.ts',
    '<rootDir>/test/unit/libvirt-driver-two-disks.test.ts',
    '<rootDir>/test/unit/libvirt-job-records.test.ts',
    '<rootDir>/test/unit/image-names.test.ts',
    '<rootDir>/test/unit/image-names-options.test.ts',
    '<rootDir>/test/unit/qcow2-header.test.ts',
    '<rootDir>/test/unit/qemu-img-headers.test.ts',
    '<rootDir>/test/unit/qemu-img-refusals.test.ts',
    '<rootDir>/test/unit/space-map.test.ts',
  ],
  reporters: ['default'],
  maxWorkers: 1,
};

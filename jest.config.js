/**
 * Four projects. `suite`: everything but test/guest/, test/libvirt/ and test/cluster/, two test
 * files at a time (integration tests start QEMU VMs and dev servers; two at a time fit this 2-core
 * machine). `guest`: test/guest/, whose VMs run a real guest under TCG (most of a core each).
 * `libvirt`: test/libvirt/, which restarts libvirtd, the one the suite's libvirt conformance cases
 * use. `cluster`: test/cluster/. scripts/test.sh (make test, npm test) runs the suite, then guest
 * and libvirt in one run in band (one file at a time), then cluster in band, and prints the closing
 * `tests: N passed, N failed` line over the three runs.
 */
const common = {
  testEnvironment: 'node',
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.ts$': ['ts-jest', { isolatedModules: true, diagnostics: false }] },
};

/** @type {import('jest').Config} */
module.exports = {
  projects: [
    {
      ...common,
      displayName: 'suite',
      roots: ['<rootDir>/test'],
      testPathIgnorePatterns: [
        '/node_modules/',
        '<rootDir>/test/guest/',
        '<rootDir>/test/libvirt/',
        '<rootDir>/test/cluster/',
      ],
    },
    { ...common, displayName: 'guest', roots: ['<rootDir>/test/guest'] },
    // test/libvirt/ kills and restarts the host's one libvirtd: never beside another libvirt test.
    { ...common, displayName: 'libvirt', roots: ['<rootDir>/test/libvirt'] },
    // The production topology (lab/cluster/): one cluster per file, most of the machine's cores: in band.
    { ...common, displayName: 'cluster', roots: ['<rootDir>/test/cluster'] },
  ],
  maxWorkers: 2,
  testTimeout: 120_000,
  reporters: ['default', '<rootDir>/test/harness/summary-reporter.js'],
};

/**
 * The libvirt set: the libvirt driver's chain, job and release code (between its markers) and the
 * readers of what virsh prints.
 * Its own record, so that a whole run of it fits in an hour and one set's run leaves the others'
 * records as they are.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const base = require('../../stryker.config.json');

export default {
  ...base,
  mutate: [
    'src/drivers/libvirt/libvirt-driver.ts',
    'src/drivers/libvirt/definition.ts',
    'src/drivers/libvirt/block-job-info.ts',
    'src/drivers/libvirt/domain-xml.ts',
    'src/drivers/libvirt/job-records.ts',
  ],
  jest: { ...base.jest, configFile: 'test/mutation/jest.libvirt.config.js' },
  incrementalFile: 'test/mutation/stryker-incremental-libvirt.json',
  htmlReporter: { fileName: 'test-artifacts/mutation/libvirt/index.html' },
  jsonReporter: { fileName: 'test-artifacts/mutation/libvirt/mutation.json' },
};

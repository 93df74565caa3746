/**
 * The libvirt driver with a job or a record on each of two disks: every lookup by job id or by disk
 * finds that disk's own, never the first one listed (test/harness/fake-virsh.ts answers as virsh).
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { type JobRecord, JobRecords } from '../../src/drivers/libvirt/job-records';
import { LibvirtDriver } from '../../src/drivers/libvirt/libvirt-driver';
import { VirshCommandError } from '../../src/drivers/libvirt/virsh';
import { type FakeVirsh, installFakeVirsh } from '../harness/fake-virsh';

jest.setTimeout(20_000);

const vol = (v: string): string => `/s/images/disk0/${v}.qcow2`;
/** vm1: vda v2 -> v1 -> v0 (indexes 1, 2, 3), its mirror as given; vdb one layer, `vdbFile`. */
function domain(opts: { vdaMirror?: string; vdbFile?: string } = {}): string {
  return `<domain type='kvm'><name>vm1</name><devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='${vol('v2')}' index='1'/>
      <backingStore type='file' index='2'><format type='qcow2'/><source file='${vol('v1')}'/>
        <backingStore type='file' index='3'><format type='qcow2'/><source file='${vol('v0')}'/><backingStore/></backingStore>
      </backingStore>${opts.vdaMirror ?? ''}
      <target dev='vda' bus='virtio'/><serial>disk0</serial></disk>
    <disk type='file' device='disk'><source file='${opts.vdbFile ?? '/s/images/vdb/w0.qcow2'}' index='7'/><backingStore/>
      <target dev='vdb' bus='virtio'/></disk>
  </devices></domain>`;
}
const info = (cur: number, end: number): string => ` type=Block Commit\n bandwidth=0\n cur=${cur}\n end=${end}\n`;
const vdbRecord: JobRecord = {
  jobId: 'merge-vdb-w0',
  target: 'vdb',
  kind: 'intermediate',
  topPath: '/s/images/vdb/w1.qcow2',
  basePath: '/s/images/vdb/w0.qcow2',
};
const vdaCommit = { jobId: 'merge-disk0-v1', deviceNode: 'vda[1]', topNode: 'vda[2]', baseNode: 'vda[3]', speed: 0 };

let dir: string;
let virsh: FakeVirsh;
let driver: LibvirtDriver;
let records: JobRecords;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(tmpdir(), 'lm-libvirt-two-'));
  virsh = await installFakeVirsh(dir);
  await virsh.answer('domain.xml', domain());
  driver = new LibvirtDriver({ uri: 'qemu:///test', runDir: path.join(dir, 'run') });
  records = new JobRecords(path.join(dir, 'run'));
});
afterEach(async () => {
  await driver.close();
  virsh.restore();
  await fs.rm(dir, { recursive: true, force: true });
});

test("another disk's job record does not stop a start, and stays as it was", async () => {
  await records.write('vm1', vdbRecord);
  await driver.startCommit('vm1', vdaCommit);
  const byTarget = (await records.all('vm1')).map((r) => [r.target, r.jobId]);
  expect(byTarget.sort()).toEqual([
    ['vda', 'merge-disk0-v1'],
    ['vdb', 'merge-vdb-w0'],
  ]);
});

test("a start libvirt refuses removes this disk's record and leaves the other disk's", async () => {
  await records.write('vm1', vdbRecord);
  await virsh.answer('fail-blockcommit', 'error: block copy still active: disk vda already in use\n');
  await expect(driver.startCommit('vm1', vdaCommit)).rejects.toThrow(/already in use/);
  expect(await records.all('vm1')).toEqual([vdbRecord]);
});

test('a cancel records the state of its own job, not of the job listed first', async () => {
  await records.write('vm1', vdbRecord);
  await virsh.answer('domain.xml', domain({ vdaMirror: "<mirror type='file' job='active-commit' ready='yes'/>" }));
  await virsh.answer('info-vda', info(10, 10));
  await virsh.answer('info-vdb', info(1, 10));
  await driver.cancelJob('vm1', 'merge-vdb-w0');
  expect(await records.byId('vm1', 'merge-vdb-w0')).toEqual({ ...vdbRecord, abortedIn: 'running' });
  expect((await virsh.calls()).at(-1)).toBe('blockjob vm1 vdb --abort');
});

test("a dismiss judges its own job's state, not the state of the job listed first", async () => {
  await records.write('vm1', vdbRecord);
  await virsh.answer('info-vda', info(1, 10));
  await driver.dismissJob('vm1', 'merge-vdb-w0');
  expect(await records.all('vm1')).toEqual([]);
});

test('a file that is a layer of two disks is refused for release, with both layers named', async () => {
  await virsh.answer('domain.xml', domain({ vdbFile: vol('v1') }));
  await expect(driver.releaseVolume('vm1', vol('v1'))).rejects.toThrow(
    new VirshCommandError(
      ['release', 'vm1', vol('v1')],
      `${vol('v1')} is still a layer of the domain (vda[2], vdb[7])`,
    ),
  );
});

/**
 * The libvirt driver's job records on real files: what it started on a disk, found again after an
 * agent restart by its id; a leftover of a write that did not finish, or a file of another shape,
 * is no record.
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { type JobRecord, JobRecords } from '../../src/drivers/libvirt/job-records';

let runDir: string;
let records: JobRecords;
const dir = (): string => path.join(runDir, 'vm1', 'libvirt-jobs');
const record: JobRecord = {
  jobId: 'lm.disk0.v1',
  target: 'vda',
  kind: 'intermediate',
  topPath: '/s/images/disk0/v1.qcow2',
  basePath: '/s/images/disk0/v0.qcow2',
};

beforeEach(async () => {
  runDir = await fs.mkdtemp(path.join(tmpdir(), 'lm-records-'));
  records = new JobRecords(runDir);
});
afterEach(async () => {
  await fs.rm(runDir, { recursive: true, force: true });
});

test("one record per disk, in the VM's run dir, replaced whole; found by job id after a restart", async () => {
  await records.write('vm1', record);
  await records.write('vm1', { ...record, abortedIn: 'running' });
  await records.write('vm1', { ...record, jobId: 'lm.disk1.w1', target: 'vdb' });
  expect((await fs.readdir(dir())).sort()).toEqual(['vda.json', 'vdb.json']);
  const again = new JobRecords(runDir);
  expect(await again.byId('vm1', 'lm.disk0.v1')).toEqual({ ...record, abortedIn: 'running' });
  expect(await again.byId('vm1', 'lm.disk9.v1')).toBeUndefined();
  expect(await again.all('vm2')).toEqual([]);
});

test('a leftover of an unfinished write, and a file of another shape, are no records', async () => {
  await records.write('vm1', record);
  await fs.writeFile(path.join(dir(), 'vdb.json.tmp'), JSON.stringify({ ...record, target: 'vdb' }));
  await fs.writeFile(path.join(dir(), 'vdc.json'), JSON.stringify({ ...record, target: 'vdc', extra: 1 }));
  expect(await records.all('vm1')).toStrictEqual([record]);
});

test("remove forgets the disk's record, and is done for one that is not there", async () => {
  await records.write('vm1', record);
  await records.remove('vm1', 'vda');
  await records.remove('vm1', 'vda');
  expect(await records.all('vm1')).toEqual([]);
});

test('a records dir that cannot be read is thrown, not taken for no records', async () => {
  await fs.mkdir(path.join(runDir, 'vm1'), { recursive: true });
  await fs.writeFile(dir(), '');
  await expect(records.all('vm1')).rejects.toThrow(/ENOTDIR/);
});

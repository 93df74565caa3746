/**
 * The libvirt driver's chain, job and release code against a `virsh` that answers from files
 * (test/harness/fake-virsh.ts): the domain XML and `blockjob --info` replies libvirt gives, and the
 * exact virsh calls the driver makes. The same driver against a real libvirtd is in test/libvirt/.
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { DiskNotFoundError, VmGoneError, VmNotFoundError } from '../../src/drivers/errors';
import { type JobRecord, JobRecords } from '../../src/drivers/libvirt/job-records';
import { LibvirtDriver } from '../../src/drivers/libvirt/libvirt-driver';
import { VirshCommandError } from '../../src/drivers/libvirt/virsh';
import { type FakeVirsh, installFakeVirsh } from '../harness/fake-virsh';

jest.setTimeout(20_000);

const S = '/s/images/disk0';
/** vm1: vda (serial disk0) v2 -> v1 -> v0 at indexes 1, 2, 3; vdb (no serial) one raw-ish layer. */
function domain(opts: { vda?: string[]; mirror?: string } = {}): string {
  const [top, ...below] = (opts.vda ?? ['v2', 'v1', 'v0']).map((v) => `${S}/${v}.qcow2`);
  let backing = '<backingStore/>';
  for (let i = below.length - 1; i >= 0; i--)
    backing = `<backingStore type='file' index='${i + 2}'><format type='qcow2'/><source file='${below[i]}'/>${backing}</backingStore>`;
  return `<domain type='kvm'><name>vm1</name><devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='${top}' index='1'/>${backing}${opts.mirror ?? ''}
      <target dev='vda' bus='virtio'/><serial>disk0</serial></disk>
    <disk type='file' device='disk'><source file='/s/images/vdb/w0.qcow2' index='7'/><backingStore/>
      <target dev='vdb' bus='virtio'/></disk>
  </devices></domain>`;
}
const vol = (v: string): string => `${S}/${v}.qcow2`;
const info = (type: string, cur: number, end: number): string =>
  ` type=${type}\n bandwidth=0\n cur=${cur}\n end=${end}\n`;

let dir: string;
let virsh: FakeVirsh;
let driver: LibvirtDriver;
let records: JobRecords;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(tmpdir(), 'lm-libvirt-'));
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

const record = (over: Partial<JobRecord> = {}): JobRecord => ({
  jobId: 'merge-disk0-v1',
  target: 'vda',
  kind: 'intermediate',
  topPath: vol('v1'),
  basePath: vol('v0'),
  ...over,
});
const commit = { jobId: 'merge-disk0-v1', deviceNode: 'vda[1]', topNode: 'vda[2]', baseNode: 'vda[3]', speed: 0 };

describe('chains', () => {
  test("each disk by its serial (else its target), active layer first, layers named as libvirt's block calls name them", async () => {
    expect(await driver.readAllChains('vm1')).toEqual([
      {
        diskId: 'disk0',
        rootNode: 'vda[1]',
        volumes: [
          { path: vol('v2'), nodeName: 'vda[1]' },
          { path: vol('v1'), nodeName: 'vda[2]' },
          { path: vol('v0'), nodeName: 'vda[3]' },
        ],
      },
      { diskId: 'vdb', rootNode: 'vdb[7]', volumes: [{ path: '/s/images/vdb/w0.qcow2', nodeName: 'vdb[7]' }] },
    ]);
    expect(await virsh.calls()).toEqual(['dumpxml vm1']);
  });

  test('one disk by its id; a disk the domain does not have is DiskNotFound', async () => {
    expect((await driver.readChain('vm1', 'vdb')).rootNode).toBe('vdb[7]');
    await expect(driver.readChain('vm1', 'disk9')).rejects.toThrow(
      new DiskNotFoundError('domain vm1 has no disk disk9'),
    );
  });

  test("the layers that are a file, by libvirt's name; releasing one libvirt still holds is refused", async () => {
    expect(await driver.nodesHolding('vm1', vol('v1'))).toEqual(['vda[2]']);
    expect(await driver.nodesHolding('vm1', vol('v9'))).toEqual([]);
    await expect(driver.releaseVolume('vm1', vol('v1'))).rejects.toThrow(
      new VirshCommandError(['release', 'vm1', vol('v1')], `${vol('v1')} is still a layer of the domain (vda[2])`),
    );
    await expect(driver.releaseVolume('vm1', vol('v9'))).resolves.toBeUndefined();
  });
});

describe('a domain that is gone', () => {
  test('one seen before and missing now is gone; one never seen is not found', async () => {
    await virsh.answer('fail-dumpxml', "error: failed to get domain 'vm1'\n");
    await expect(driver.readAllChains('vm1')).rejects.toThrow(VmNotFoundError);
    await virsh.forget('fail-dumpxml');
    await driver.readAllChains('vm1');
    await virsh.answer('fail-dumpxml', "error: failed to get domain 'vm1'\n");
    const err = await driver.readAllChains('vm1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmGoneError);
    expect(err).toMatchObject({ message: "domain vm1 is gone: libvirt has no domain: failed to get domain 'vm1'" });
  });

  test('one that does not run is gone; any other refusal is passed on', async () => {
    await virsh.answer('fail-dumpxml', 'error: Requested operation is not valid: domain is not running\n');
    await expect(driver.readAllChains('vm1')).rejects.toThrow(
      new VmGoneError('domain vm1 does not run: Requested operation is not valid: domain is not running'),
    );
    await virsh.answer('fail-dumpxml', 'error: internal error: something else\n');
    await expect(driver.readAllChains('vm1')).rejects.toThrow(VirshCommandError);
  });
});

describe('listJobs', () => {
  test('a running job: its type, progress and the id the driver recorded; a disk without a job has none', async () => {
    await records.write('vm1', record());
    await virsh.answer('info-vda', info('Block Commit', 3, 10));
    expect(await driver.listJobs('vm1')).toEqual([
      { id: 'merge-disk0-v1', type: 'commit', status: 'running', offset: 3, len: 10 },
    ]);
    expect(await virsh.calls()).toEqual([
      'dumpxml vm1',
      'blockjob vm1 vda --info --raw',
      'blockjob vm1 vdb --info --raw',
      'dumpxml vm1',
    ]);
  });

  test("a job with no record is named by its disk; a ready mirror is ready and in sync whatever libvirt's cur says", async () => {
    await virsh.answer('domain.xml', domain({ mirror: "<mirror type='file' job='active-commit' ready='yes'/>" }));
    await virsh.answer('info-vda', info('Active Block Commit', 9, 10));
    await virsh.answer('info-vdb', info('Block Copy', 0, 5));
    expect(await driver.listJobs('vm1')).toEqual([
      { id: 'libvirt.vda', type: 'commit', status: 'ready', offset: 10, len: 10 },
      { id: 'libvirt.vdb', type: 'mirror', status: 'running', offset: 0, len: 5 },
    ]);
    await virsh.answer('domain.xml', domain({ mirror: "<mirror type='file' job='active-commit' ready='no'/>" }));
    expect((await driver.listJobs('vm1'))[0]).toMatchObject({ status: 'running', offset: 9 });
  });

  test("job types as the driver's callers know them", async () => {
    for (const [libvirt, ours] of [
      ['Block Pull', 'stream'],
      ['Block Copy', 'mirror'],
      ['Active Block Commit', 'commit'],
      ['Backup', 'backup'],
    ]) {
      await virsh.answer('info-vda', info(libvirt, 0, 1));
      expect((await driver.listJobs('vm1'))[0].type).toBe(ours);
    }
  });

  describe('a job libvirt no longer lists ended as its chain says', () => {
    test('top gone, base there: merged, no error', async () => {
      await records.write('vm1', record());
      await virsh.answer('domain.xml', domain({ vda: ['v2', 'v0'] }));
      expect(await driver.listJobs('vm1')).toEqual([
        { id: 'merge-disk0-v1', type: 'commit', status: 'concluded', offset: 0, len: 0 },
      ]);
    });

    test('top still there, or base gone: an error that says so', async () => {
      await records.write('vm1', record());
      const error = 'block job ended and the chain still holds its top (libvirt did not report why)';
      expect(await driver.listJobs('vm1')).toEqual([
        { id: 'merge-disk0-v1', type: 'commit', status: 'concluded', offset: 0, len: 0, error },
      ]);
      await virsh.answer('domain.xml', domain({ vda: ['v2'] }));
      expect((await driver.listJobs('vm1'))[0]).toMatchObject({ error });
    });

    test('aborted by this driver: before ready a cancel, in ready a clean end', async () => {
      await records.write('vm1', record({ abortedIn: 'running' }));
      expect((await driver.listJobs('vm1'))[0]).toMatchObject({ error: 'block job cancelled; chain unchanged' });
      await records.write('vm1', record({ abortedIn: 'ready', kind: 'active', topPath: vol('v2') }));
      const [job] = await driver.listJobs('vm1');
      expect(job).toEqual({ id: 'merge-disk0-v1', type: 'commit', status: 'concluded', offset: 0, len: 0 });
    });

    test("libvirt's event names the end: failed, or cancelled by someone else", async () => {
      await records.write('vm1', record());
      for (const [ending, error] of [
        ['failed', 'block job failed (libvirt reported it failed); chain unchanged'],
        ['canceled', 'block job cancelled; chain unchanged'],
      ]) {
        await virsh.answer('events', `event 'block-job-2' for domain 'vm1': Block Commit for vda ${ending}\n`);
        const listening = new LibvirtDriver({ uri: 'qemu:///test', runDir: path.join(dir, 'run') });
        try {
          await listening.nextJobChange('vm1', 5_000);
          expect((await listening.listJobs('vm1'))[0]).toMatchObject({ error });
        } finally {
          await listening.close();
        }
      }
    });

    test('a record of a disk the domain no longer has, or none at all: no job', async () => {
      await records.write('vm1', record({ target: 'vdc' }));
      expect(await driver.listJobs('vm1')).toEqual([]);
    });
  });
});

describe('startCommit', () => {
  test('an intermediate commit: the layers by index, the relative base name kept, the speed in bytes; recorded first', async () => {
    await driver.startCommit('vm1', { ...commit, backingFile: 'v0.qcow2', speed: 1_048_576 });
    expect(await virsh.calls()).toEqual([
      'dumpxml vm1',
      'blockcommit vm1 vda --top vda[2] --base vda[3] --keep-relative --bandwidth 1048576 --bytes',
    ]);
    expect(await records.all('vm1')).toEqual([record()]);
  });

  test('an active commit of the top, the device named by its target', async () => {
    await driver.startCommit('vm1', {
      ...commit,
      jobId: 'j2',
      deviceNode: 'vda',
      topNode: 'vda[1]',
      baseNode: 'vda[2]',
    });
    expect((await virsh.calls())[1]).toBe('blockcommit vm1 vda --top vda[1] --base vda[2] --active');
    expect(await records.all('vm1')).toEqual([
      record({ jobId: 'j2', kind: 'active', topPath: vol('v2'), basePath: vol('v1') }),
    ]);
  });

  test('refused before anything is started: layers of another disk, layers not in the chain, no such disk', async () => {
    const refusals: Array<[Partial<typeof commit>, Error]> = [
      [
        { topNode: 'vdb[2]' },
        new VirshCommandError(['blockcommit', 'vm1', 'vda'], 'layers vdb[2] and vda[3] are not layers of disk vda'),
      ],
      [
        { baseNode: 'vdb[3]' },
        new VirshCommandError(['blockcommit', 'vm1', 'vda'], 'layers vda[2] and vdb[3] are not layers of disk vda'),
      ],
      [
        { topNode: 'v1' },
        new VirshCommandError(['blockcommit', 'vm1', 'vda'], 'layers v1 and vda[3] are not layers of disk vda'),
      ],
      [
        { baseNode: 'v0' },
        new VirshCommandError(['blockcommit', 'vm1', 'vda'], 'layers vda[2] and v0 are not layers of disk vda'),
      ],
      [
        { topNode: 'vda[5]' },
        new VirshCommandError(['blockcommit', 'vm1', 'vda'], 'vda[5] or vda[3] is not in the chain'),
      ],
      [
        { baseNode: 'vda[6]' },
        new VirshCommandError(['blockcommit', 'vm1', 'vda'], 'vda[2] or vda[6] is not in the chain'),
      ],
      [
        { deviceNode: 'vdc', topNode: 'vdc[2]', baseNode: 'vdc[3]' },
        new DiskNotFoundError('domain vm1 has no disk vdc'),
      ],
    ];
    for (const [over, err] of refusals) {
      await expect(driver.startCommit('vm1', { ...commit, ...over })).rejects.toThrow(err);
    }
    expect((await virsh.calls()).filter((c) => !c.startsWith('dumpxml'))).toEqual([]);
    expect(await records.all('vm1')).toEqual([]);
  });

  test('a base name libvirt cannot write is refused: any for an active commit, another than the chain has', async () => {
    const refusal = (name: string) =>
      new VirshCommandError(
        ['blockcommit', 'vm1', 'vda'],
        `backing file ${name} cannot be written by libvirt for this commit`,
      );
    await expect(driver.startCommit('vm1', { ...commit, backingFile: '/s/images/disk0/v0.qcow2' })).rejects.toThrow(
      refusal('/s/images/disk0/v0.qcow2'),
    );
    await expect(
      driver.startCommit('vm1', { ...commit, topNode: 'vda[1]', baseNode: 'vda[2]', backingFile: 'v1.qcow2' }),
    ).rejects.toThrow(refusal('v1.qcow2'));
    expect((await virsh.calls()).filter((c) => !c.startsWith('dumpxml'))).toEqual([]);
  });

  test('a job id in use on another disk is refused; the same id on the same disk replaces its record', async () => {
    await records.write('vm1', record({ target: 'vdb' }));
    await expect(driver.startCommit('vm1', commit)).rejects.toThrow(
      new VirshCommandError(['blockcommit', 'vm1', 'vda'], 'job id merge-disk0-v1 is in use on disk vdb'),
    );
    await records.remove('vm1', 'vdb');
    await records.write('vm1', record({ abortedIn: 'running' }));
    await driver.startCommit('vm1', commit);
    expect(await records.all('vm1')).toEqual([record()]);
  });

  test("a start libvirt refuses leaves the disk's record as it was: the previous one back, or none", async () => {
    await virsh.answer('fail-blockcommit', 'error: block copy still active: disk vda already in use\n');
    await expect(driver.startCommit('vm1', commit)).rejects.toThrow(/already in use/);
    expect(await records.all('vm1')).toEqual([]);
    const previous = record({ jobId: 'old', abortedIn: 'ready' });
    await records.write('vm1', previous);
    await expect(driver.startCommit('vm1', commit)).rejects.toThrow(/already in use/);
    expect(await records.all('vm1')).toEqual([previous]);
  });
});

describe('complete, cancel, speed and dismiss', () => {
  test('each by the disk of its record, or of a libvirt.<target> id; an unknown id is refused', async () => {
    await records.write('vm1', record({ target: 'vdb' }));
    await driver.completeJob('vm1', 'merge-disk0-v1');
    await driver.setSpeed('vm1', 'libvirt.vda', 4096);
    expect(await virsh.calls()).toEqual(['blockjob vm1 vdb --pivot', 'blockjob vm1 vda --bandwidth 4096 --bytes']);
    for (const id of ['other', 'lm.libvirt.vda', 'libvirt.', 'libvirt.vda\nvdb']) {
      await expect(driver.completeJob('vm1', id)).rejects.toThrow(
        new VirshCommandError(['blockjob', 'vm1'], `no block job ${id}`),
      );
    }
    expect(await virsh.calls()).toEqual([]);
  });

  test('a cancel records the state it was asked in, then aborts', async () => {
    await records.write('vm1', record());
    await virsh.answer('info-vda', info('Block Commit', 1, 10));
    await driver.cancelJob('vm1', 'merge-disk0-v1');
    expect(await records.byId('vm1', 'merge-disk0-v1')).toEqual(record({ abortedIn: 'running' }));
    expect((await virsh.calls()).at(-1)).toBe('blockjob vm1 vda --abort');

    await virsh.answer('domain.xml', domain({ mirror: "<mirror type='file' job='active-commit' ready='yes'/>" }));
    await driver.cancelJob('vm1', 'merge-disk0-v1');
    expect(await records.byId('vm1', 'merge-disk0-v1')).toEqual(record({ abortedIn: 'ready' }));
  });

  test('a cancel of a job the driver did not start writes no record', async () => {
    await virsh.answer('info-vda', info('Block Commit', 1, 10));
    await driver.cancelJob('vm1', 'libvirt.vda');
    expect(await records.all('vm1')).toEqual([]);
    expect((await virsh.calls()).at(-1)).toBe('blockjob vm1 vda --abort');
  });

  test('a cancel of a job that has ended keeps its record as it was', async () => {
    await records.write('vm1', record());
    await virsh.answer('domain.xml', domain({ vda: ['v2', 'v0'] }));
    await driver.cancelJob('vm1', 'merge-disk0-v1');
    expect(await records.all('vm1')).toEqual([record()]);
    expect((await virsh.calls()).at(-1)).toBe('blockjob vm1 vda --abort');
  });

  test("a dismiss forgets an ended job's record; a running job's is refused; no record, nothing to do", async () => {
    await records.write('vm1', record());
    await virsh.answer('info-vda', info('Block Commit', 1, 10));
    await expect(driver.dismissJob('vm1', 'merge-disk0-v1')).rejects.toThrow(
      new VirshCommandError(['dismiss', 'vm1', 'merge-disk0-v1'], 'job merge-disk0-v1 is running, not concluded'),
    );
    expect(await records.all('vm1')).toEqual([record()]);
    await virsh.forget('info-vda');
    await driver.dismissJob('vm1', 'merge-disk0-v1');
    expect(await records.all('vm1')).toEqual([]);
    await virsh.calls();
    await driver.dismissJob('vm1', 'merge-disk0-v1');
    expect(await virsh.calls()).toEqual([]);
  });
});

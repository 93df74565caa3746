import { ConfigError, loadWorkerConfig } from '../../src/config/worker-config';
import { parseBlockJobInfo } from '../../src/host/libvirt/block-job-info';
import { layerName, parseDomainDisks, parseLayerName } from '../../src/host/libvirt/domain-xml';

/** What the libvirt driver reads from virsh, and the host agent's choice of driver. */

const DOMAIN = `<domain type='qemu' id='3'>
  <name>vm1</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/s/images/disk0/v2.qcow2' index='1'/>
      <backingStore type='file' index='2'>
        <format type='qcow2'/>
        <source file='/s/images/disk0/v1.qcow2'/>
        <backingStore type='file' index='3'>
          <format type='qcow2'/>
          <source file='/s/images/disk0/v0.qcow2'/>
          <backingStore/>
        </backingStore>
      </backingStore>
      <mirror type='file' job='active-commit' ready='yes'>
        <format type='qcow2'/>
        <source file='/s/images/disk0/v1.qcow2' index='2'/>
      </mirror>
      <target dev='vda' bus='virtio'/>
      <serial>0042</serial>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/iso/x.iso' index='4'/>
      <target dev='sda' bus='sata'/>
    </disk>
  </devices>
</domain>`;

describe('libvirt domain XML', () => {
  test('a chain from nested backingStore, active first, with indexes, serial kept as text, cdroms left out', () => {
    expect(parseDomainDisks(DOMAIN)).toEqual([
      {
        target: 'vda',
        serial: '0042',
        layers: [
          { path: '/s/images/disk0/v2.qcow2', index: 1 },
          { path: '/s/images/disk0/v1.qcow2', index: 2 },
          { path: '/s/images/disk0/v0.qcow2', index: 3 },
        ],
        mirror: { job: 'active-commit', ready: true },
      },
    ]);
  });

  test('a backing layer without an index and a document without devices are refused', () => {
    expect(() => parseDomainDisks(DOMAIN.replace("<backingStore type='file' index='2'>", '<backingStore>'))).toThrow(
      /has no index/,
    );
    expect(() => parseDomainDisks('<domain><name>x</name></domain>')).toThrow(/unexpected domain XML/);
  });

  test('layer names round-trip; anything else is no layer', () => {
    expect(parseLayerName(layerName('vdb', 7))).toEqual({ target: 'vdb', index: 7 });
    for (const bad of ['vda', 'vda[x]', '../vda[1]', 'vda[1] --pivot']) expect(parseLayerName(bad)).toBeUndefined();
  });
});

describe('virsh blockjob --info --raw', () => {
  test('no output is no job; the fields of a job are read, a malformed one refused', () => {
    expect(parseBlockJobInfo('\n')).toBeUndefined();
    expect(parseBlockJobInfo(' type=Active Block Commit\n bandwidth=0\n cur=99\n end=100\n')).toEqual({
      type: 'Active Block Commit',
      cur: 99,
      end: 100,
    });
    expect(() => parseBlockJobInfo(' type=Block Commit\n cur=x\n end=1\n')).toThrow(/unexpected/);
  });
});

describe('host agent driver choice', () => {
  const host = ['--role', 'host', '--host-id', 'h1', '--storage-root', '/s', '--run-dir', '/r'];
  test('qmp by default; libvirt with its URI by flag or environment', () => {
    expect(loadWorkerConfig(host, {})).toMatchObject({ driver: 'qmp' });
    expect(loadWorkerConfig([...host, '--driver', 'libvirt'], {})).toMatchObject({
      driver: 'libvirt',
      libvirtUri: 'qemu:///system',
    });
    expect(
      loadWorkerConfig(host, { LIVE_MERGE_DRIVER: 'libvirt', LIVE_MERGE_LIBVIRT_URI: 'qemu+ssh://h2/system' }),
    ).toMatchObject({ driver: 'libvirt', libvirtUri: 'qemu+ssh://h2/system' });
  });
  test('an unknown driver or a malformed URI is refused naming the field', () => {
    expect(() => loadWorkerConfig([...host, '--driver', 'xen'], {})).toThrow(ConfigError);
    expect(() => loadWorkerConfig([...host, '--driver', 'xen'], {})).toThrow(/driver/);
    expect(() => loadWorkerConfig([...host, '--libvirt-uri', 'not a uri'], {})).toThrow(/libvirtUri/);
  });
});

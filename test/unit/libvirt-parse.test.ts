import { ConfigError, loadWorkerConfig } from '../../src/config/worker-config';
import { parseBlockJobInfo } from '../../src/drivers/libvirt/block-job-info';
import { layerName, parseDomainDisks, parseLayerName } from '../../src/drivers/libvirt/domain-xml';

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

  test('a domain of one disk has that disk', () => {
    const one = DOMAIN.slice(0, DOMAIN.indexOf("    <disk type='file' device='cdrom'>")) + '  </devices>\n</domain>';
    expect(parseDomainDisks(one).map((d) => d.target)).toEqual(['vda']);
  });

  test('a chain that goes on in a layer that is no file is refused, not cut short', () => {
    const xml = DOMAIN.replace("<source file='/s/images/disk0/v0.qcow2'/>", "<source protocol='nbd' name='v0'/>");
    expect(() => parseDomainDisks(xml)).toThrow('a layer of vda is no file: {"protocol":"nbd","name":"v0"}');
  });

  test('a backing layer without an index and a document without devices are refused', () => {
    expect(() => parseDomainDisks(DOMAIN.replace("<backingStore type='file' index='2'>", '<backingStore>'))).toThrow(
      /has no index/,
    );
    expect(() => parseDomainDisks('<domain><name>x</name></domain>')).toThrow(/unexpected domain XML/);
  });

  test('a disk without a device attribute is a disk; network disks, disks without a file and empty serials are not ids', () => {
    const xml = `<domain><name>vm1</name><devices>
      <disk type='file'><source file='/s/a.qcow2' index='1'/><backingStore type='file' index='2'>
        <source file='/s/b.qcow2'/><backingStore type='file' index='3'/></backingStore>
        <mirror type='file'/><target dev='vda'/><serial></serial></disk>
      <disk type='network' device='disk'><source protocol='nbd' name='x'/><target dev='vdb'/></disk>
      <disk type='file' device='disk'><target dev='vdc'/></disk>
      <disk type='file' device='disk'><source file='/s/d.qcow2'/><target dev='vdd'/><serial>7</serial></disk>
    </devices></domain>`;
    expect(parseDomainDisks(xml)).toEqual([
      {
        target: 'vda',
        layers: [
          { path: '/s/a.qcow2', index: 1 },
          { path: '/s/b.qcow2', index: 2 },
        ],
        mirror: { job: 'copy', ready: false },
      },
      { target: 'vdd', serial: '7', layers: [{ path: '/s/d.qcow2', index: 0 }] },
    ]);
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
    // Without the indent, two of it, white space around a value: the same fields.
    expect(parseBlockJobInfo('type=Block Pull  \n  cur=0\nend=7\n')).toEqual({ type: 'Block Pull', cur: 0, end: 7 });
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

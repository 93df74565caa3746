/** The edit of a shut-off domain's inactive XML that points a disk at another volume (withDiskSource). */
import { DomainXmlError, parseDomainDisks, withDiskSource } from '../../src/drivers/libvirt/domain-xml';

const disk = (target: string, serial: string | undefined, file: string, backing = ''): string => `
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${file}'/>${backing}
      <target dev='${target}' bus='virtio'/>${serial === undefined ? '' : `\n      <serial>${serial}</serial>`}
    </disk>`;
const domain = (...disks: string[]): string =>
  `<domain type='qemu'>\n  <name>vm1</name>\n  <devices>${disks.join('')}\n    <controller type='usb'/>\n  </devices>\n</domain>\n`;
const backingStore = `
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='/s/images/d0/v1.qcow2'/>
        <backingStore type='file'>
          <format type='qcow2'/>
          <source file='/s/images/d0/v0.qcow2'/>
          <backingStore/>
        </backingStore>
      </backingStore>`;

test('the disk named by its serial starts from the new volume; the other disk and the rest are kept as written', () => {
  const xml = domain(disk('vda', 'd0', '/s/images/d0/v2.qcow2'), disk('vdb', 'd1', '/s/images/d1/v2.qcow2'));
  const out = withDiskSource(xml, 'd0', '/s/images/d0/v1.qcow2');
  expect(out).toBe(xml.replace("file='/s/images/d0/v2.qcow2'", "file='/s/images/d0/v1.qcow2'"));
});

test('a disk without a serial is named by its target; its explicit backingStore is dropped (libvirt reads the headers)', () => {
  const xml = domain(disk('vda', undefined, '/s/images/d0/v2.qcow2', backingStore));
  const out = withDiskSource(xml, 'vda', '/s/images/d0/v1.qcow2');
  expect(out).toBe(domain(disk('vda', undefined, '/s/images/d0/v1.qcow2')));
  expect(parseDomainDisks(out)).toEqual([{ target: 'vda', layers: [{ path: '/s/images/d0/v1.qcow2', index: 0 }] }]);
  expect(out).toMatch(/<controller type='usb'\/>/);
});

test('a self-closed backingStore goes too', () => {
  const xml = domain(disk('vda', 'd0', '/s/a.qcow2', '\n      <backingStore/>'));
  expect(withDiskSource(xml, 'd0', '/s/b.qcow2')).toBe(domain(disk('vda', 'd0', '/s/b.qcow2')));
});

test('a source with another attribute before its file is edited in place', () => {
  const xml = domain(disk('vda', 'd0', '/s/a.qcow2')).replace(
    '<source file=',
    "<source startupPolicy='optional' file=",
  );
  expect(withDiskSource(xml, 'd0', '/s/b.qcow2')).toBe(xml.replace("'/s/a.qcow2'", "'/s/b.qcow2'"));
});

test("a name with XML's special characters is escaped, and reads back as given", () => {
  const xml = domain(disk('vda', 'd0', '/s/a.qcow2'));
  const to = `/s/it's <a> "b" & c.qcow2`;
  const out = withDiskSource(xml, 'd0', to);
  expect(out).toMatch(/file='\/s\/it&apos;s &lt;a> &quot;b&quot; &amp; c.qcow2'/);
  expect(parseDomainDisks(out)[0].layers[0].path).toBe(to);
});

test('no such disk, or two of them: DomainXmlError, nothing edited', () => {
  const xml = domain(disk('vda', 'd0', '/s/a.qcow2'));
  expect(() => withDiskSource(xml, 'd9', '/s/b.qcow2')).toThrow(DomainXmlError);
  expect(() => withDiskSource(xml, 'd9', '/s/b.qcow2')).toThrow(/has 0 file-backed disks d9, not one/);
  const two = domain(disk('vda', 'd0', '/s/a.qcow2'), disk('vdb', 'd0', '/s/c.qcow2'));
  expect(() => withDiskSource(two, 'd0', '/s/b.qcow2')).toThrow(/has 2 file-backed disks d0/);
});

test('a disk with no file source is no file-backed disk: refused', () => {
  const xml = domain(
    `\n    <disk type='file' device='disk'>\n      <source dev='/dev/x'/>\n      <target dev='vda'/>\n      <serial>d0</serial>\n    </disk>`,
  );
  expect(() => withDiskSource(xml, 'd0', '/s/b.qcow2')).toThrow(
    new DomainXmlError('the domain has 0 file-backed disks d0, not one'),
  );
});

describe('an edit the result does not confirm is refused', () => {
  const refused = new DomainXmlError('disk d0 does not start from /s/b.qcow2 after the edit');

  test('a file name in double quotes with an apostrophe: the source is not matched, so not replaced', () => {
    const xml = domain(disk('vda', 'd0', '/s/a.qcow2')).replace("file='/s/a.qcow2'", `file="/s/it's.qcow2"`);
    expect(() => withDiskSource(xml, 'd0', '/s/b.qcow2')).toThrow(DomainXmlError);
    expect(() => withDiskSource(xml, 'd0', '/s/b.qcow2')).toThrow(refused);
  });

  test("a backingStore the single drop leaves behind (here a <mirror>'s own, after the disk's)", () => {
    const mirror = `
      <backingStore/>
      <mirror type='file' job='copy'><format type='qcow2'/><source file='/s/m.qcow2'/><backingStore/></mirror>`;
    const xml = domain(disk('vda', 'd0', '/s/a.qcow2', mirror));
    expect(() => withDiskSource(xml, 'd0', '/s/b.qcow2')).toThrow(DomainXmlError);
    expect(() => withDiskSource(xml, 'd0', '/s/b.qcow2')).toThrow(refused);
  });
});

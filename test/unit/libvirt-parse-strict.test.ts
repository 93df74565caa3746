import { BlockJobInfoError, parseBlockJobInfo } from '../../src/drivers/libvirt/block-job-info';
import { DomainXmlError, layerName, parseDomainDisks, parseLayerName } from '../../src/drivers/libvirt/domain-xml';

/** The libvirt parsers' exact answers at their edges: what they leave out, and how they refuse. */

const domainOf = (disks: string): string => `<domain><name>vm1</name><devices>${disks}</devices></domain>`;

describe('libvirt domain XML, exactly', () => {
  test('a disk without a serial element has no serial field at all', () => {
    const xml = domainOf(
      "<disk type='file' device='disk'><source file='/s/a.qcow2' index='1'/><target dev='vda'/></disk>",
    );
    expect(parseDomainDisks(xml)).toStrictEqual([{ target: 'vda', layers: [{ path: '/s/a.qcow2', index: 1 }] }]);
  });

  test('only file disks count: a block disk is left out even if its source names a file', () => {
    const xml = domainOf(
      "<disk type='block' device='disk'><source file='/dev/sdb' index='1'/><target dev='vdb'/></disk>" +
        "<disk type='file' device='disk'><source file='/s/a.qcow2' index='2'/><target dev='vda'/></disk>",
    );
    expect(parseDomainDisks(xml).map((d) => d.target)).toEqual(['vda']);
  });

  test('a refusal is a DomainXmlError', () => {
    let thrown: unknown;
    try {
      parseDomainDisks('<domain><name>x</name></domain>');
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(DomainXmlError);
    expect((thrown as Error).name).toBe('DomainXmlError');
  });

  test('layer indexes of more than one digit', () => {
    expect(parseLayerName(layerName('vda', 12))).toEqual({ target: 'vda', index: 12 });
    expect(parseLayerName('vda[123]')).toEqual({ target: 'vda', index: 123 });
  });
});

describe('virsh blockjob --info --raw, exactly', () => {
  test('a field counts only at the start of its line', () => {
    expect(() => parseBlockJobInfo(' type=Active Block Commit\n progress cur=5\n end=10\n')).toThrow(BlockJobInfoError);
  });

  test('a malformed job is a BlockJobInfoError naming the output without its trailing white space', () => {
    let thrown: unknown;
    try {
      parseBlockJobInfo(' type=Block Commit\n cur=x\n end=1\n\n');
    } catch (err) {
      thrown = err;
    }
    expect((thrown as Error).name).toBe('BlockJobInfoError');
    expect((thrown as Error).message).toBe(
      'unexpected virsh blockjob --info --raw output: type=Block Commit\n cur=x\n end=1',
    );
  });
});

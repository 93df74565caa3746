/**
 * Where things live: the file a delete removes and the socket that marks the VM's own QEMU are
 * these paths, and nothing a name can say leads them out of their root.
 */
import {
  auxQmpSocketPath,
  confineToRoot,
  imageDir,
  PathOutsideRootError,
  qmpSocketPath,
  vmRunDir,
  volumeIdOf,
  volumePath,
} from '../../src/domain/layout';

describe('confineToRoot', () => {
  test('a path strictly inside the root, resolved', () => {
    expect(confineToRoot('/s', 'images/d1')).toBe('/s/images/d1');
    expect(confineToRoot('/s/', 'images/./d1/../d2')).toBe('/s/images/d2');
    expect(confineToRoot('/s', '/s/images')).toBe('/s/images');
  });

  test('the root itself, its parent, and a sibling that shares its prefix are outside', () => {
    for (const [candidate, resolved] of [
      ['.', '/s'],
      ['..', '/'],
      ['images/../../etc', '/etc'],
      ['/s2/images', '/s2/images'],
      ['../s2', '/s2'],
    ]) {
      const err = (() => {
        try {
          confineToRoot('/s', candidate);
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err).toBeInstanceOf(PathOutsideRootError);
      expect(err).toMatchObject({
        name: 'PathOutsideRootError',
        candidate: resolved,
        root: '/s',
        message: `path ${resolved} lies outside the storage root /s`,
      });
    }
  });

  test('a relative root is resolved from the working directory', () => {
    expect(confineToRoot('rel', 'images')).toBe(`${process.cwd()}/rel/images`);
  });
});

describe('volumes', () => {
  test('a disk has its image dir, a volume its qcow2 file in it', () => {
    expect(imageDir('/s', 'd1')).toBe('/s/images/d1');
    expect(volumePath('/s', 'd1', 'v1')).toBe('/s/images/d1/v1.qcow2');
  });

  test('ids that would lead out of the root are refused', () => {
    expect(() => imageDir('/s', '../..')).toThrow(PathOutsideRootError);
    expect(() => volumePath('/s', '../../..', 'v1')).toThrow(PathOutsideRootError);
  });

  test("the volume id of a file directly in the disk's image dir, and of nothing else", () => {
    expect(volumeIdOf('/s', 'd1', '/s/images/d1/v7.qcow2')).toBe('v7');
    expect(volumeIdOf('/s', 'd1', '/s/images/d1/../d1/v7.qcow2')).toBe('v7');
    expect(volumeIdOf('/s', 'd1', '/s/images/d2/v7.qcow2')).toBeUndefined();
    expect(volumeIdOf('/s', 'd1', '/s/images/d1/sub/v7.qcow2')).toBeUndefined();
    expect(volumeIdOf('/s', 'd1', '/s/images/d1/v7.raw')).toBeUndefined();
    expect(volumeIdOf('/s', 'd1', '/s/images/d1/v7.qcow2.reclaim')).toBeUndefined();
  });
});

describe("a VM's run dir and sockets", () => {
  test('the run dir of the VM, its QMP socket and the second monitor', () => {
    expect(vmRunDir('/r', 'vm1')).toBe('/r/vm1');
    expect(qmpSocketPath('/r', 'vm1')).toBe('/r/vm1/qmp.sock');
    expect(auxQmpSocketPath('/r', 'vm1')).toBe('/r/vm1/qmp-aux.sock');
  });

  test('a VM id that is no name of its own is refused', () => {
    for (const vmId of ['..', '.', '../r2']) {
      expect(() => vmRunDir('/r', vmId)).toThrow(PathOutsideRootError);
      expect(() => qmpSocketPath('/r', vmId)).toThrow(PathOutsideRootError);
      expect(() => auxQmpSocketPath('/r', vmId)).toThrow(PathOutsideRootError);
    }
  });
});

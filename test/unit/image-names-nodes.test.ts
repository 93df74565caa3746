/**
 * How the nodes of a json: specification are read when they clash, hold a value QEMU cannot open,
 * or sit beside each other (image-names.ts). QEMU refuses each of the first three outright
 * (qemu-img 7.2: "does not support the option 'filename'", "A block device must be specified").
 */
import { readName } from '../../src/storage/image-names';

const json = (spec: object): string => `json:${JSON.stringify(spec)}`;
const fileNode = (filename: string): object => ({ driver: 'file', filename });

test('a key that is both a value and a node, the node named first, is refused as a clash', () => {
  const reading = readName(
    json({ driver: 'qcow2', 'file.driver': 'file', 'file.filename': '/s/a', file: null }),
    '/img/',
  );
  expect(reading.files).toEqual([]);
  expect(reading.unresolved).toEqual([
    expect.stringMatching(/is a json: specification with keys QEMU would merge ambiguously$/),
  ]);
});

test.each([5, true, null])('a child option holding %p, no node name, is refused', (value) => {
  const reading = readName(json({ driver: 'qcow2', file: value }), '/img/');
  expect(reading.files).toEqual([]);
  expect(reading.unresolved).toEqual([
    expect.stringMatching(new RegExp(`: option file holds ${JSON.stringify(value)} where QEMU expects a node$`)),
  ]);
});

test('a list entry holding a number beside a file node: the file is read, the number refused', () => {
  const reading = readName(
    json({ driver: 'quorum', children: [{ driver: 'qcow2', file: fileNode('/s/a') }, 7] }),
    '/img/',
  );
  expect(reading.files.map((f) => f.path)).toEqual(['/s/a']);
  expect(reading.unresolved).toEqual([expect.stringMatching(/: option 1 holds 7 where QEMU expects a node$/)]);
});

test('a filename beside a file node: both are counted as opened', () => {
  const reading = readName(json({ driver: 'qcow2', file: fileNode('/s/a'), filename: '/s/b' }), '/img/');
  expect(reading.unresolved).toEqual([]);
  expect(reading.files.map((f) => f.path).sort()).toEqual(['/s/a', '/s/b']);
});

test("one child's explicit backing leaves its sibling's header backing followed", () => {
  const reading = readName(
    json({
      driver: 'quorum',
      children: [
        { driver: 'qcow2', file: fileNode('/s/a') },
        { driver: 'qcow2', file: fileNode('/s/b'), backing: null },
      ],
    }),
    '/img/',
  );
  expect(reading.unresolved).toEqual([]);
  expect(reading.files).toEqual([
    { path: '/s/a', followsBacking: true, followsDataFile: true },
    { path: '/s/b', followsBacking: false, followsDataFile: true },
  ]);
});

import { readName } from '../../src/storage/image-names';

/** Which string options of a json: specification name another node: a child key, or a list index. */
const json = (spec: object): string => `json:${JSON.stringify(spec)}`;
const file = { driver: 'file', filename: '/s/v' };

test('a string option that is no child and no path (discard=unmap) is read as a setting', () => {
  const { files, unresolved } = readName(json({ driver: 'qcow2', file, discard: 'unmap' }), '/img/');
  expect(unresolved).toEqual([]);
  expect(files.map((f) => f.path)).toEqual(['/s/v']);
});

test.each(['vendor-opt2', '2nd-opt'])(
  'an option whose name only ends or starts in digits (%s) is a setting, not a list index',
  (key) => {
    expect(readName(json({ driver: 'qcow2', file, [key]: 'on' }), '/img/').unresolved).toEqual([]);
  },
);

test('every child of a list of eleven is a node reference, index 10 too', () => {
  const names = Array.from({ length: 11 }, (_, i) => `n${i}`);
  const { unresolved } = readName(json({ driver: 'quorum', children: names }), '/img/');
  expect(unresolved).toHaveLength(11);
  expect(unresolved[10]).toMatch(/option 10 refers to a node by its name \("n10"\)$/);
});

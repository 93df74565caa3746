/**
 * How a name an image holds is read (image-names.ts), one rule at a time. QEMU itself answers for
 * the same forms in test/qemu/guard-vs-qemu.test.ts.
 */
import { dirOf, type NameReading, protocolOf, readDataFileName, readName } from '../../src/storage/image-names';

const file = (p: string, followsBacking = true, followsDataFile = true): NameReading['files'][number] => ({
  path: p,
  followsBacking,
  followsDataFile,
});
const files = (...paths: string[]): NameReading => ({ files: paths.map((p) => file(p)), unresolved: [] });
const json = (spec: unknown): string => `json:${JSON.stringify(spec)}`;
/** The reading's reasons, each checked for the words that say why. */
const unresolvedOnly = (r: NameReading, ...why: RegExp[]): void => {
  expect(r.files).toEqual([]);
  expect(r.unresolved).toHaveLength(why.length);
  why.forEach((w, i) => expect(r.unresolved[i]).toMatch(w));
};

describe('dirOf and protocolOf', () => {
  test("an image's directory is its path up to and with the last slash", () => {
    expect(dirOf('/s/d/v.qcow2')).toBe('/s/d/');
    expect(dirOf('/v.qcow2')).toBe('/');
    expect(dirOf('v.qcow2')).toBe('');
  });
  test('a protocol is what precedes a colon that comes before any slash', () => {
    expect(protocolOf('file:/x')).toBe('file');
    expect(protocolOf('nbd+unix:///e?socket=/s')).toBe('nbd+unix');
    expect(protocolOf('./foo:bar.qcow2')).toBeUndefined();
    expect(protocolOf('/a:b')).toBeUndefined();
    expect(protocolOf('plain.qcow2')).toBeUndefined();
    expect(protocolOf(':x')).toBe('');
  });
});

describe('plain names', () => {
  test('absolute: that path, as written', () => {
    expect(readName('/s/d//../v.qcow2', '/img/')).toEqual(files('/s/d//../v.qcow2'));
  });
  test('relative: the directory and the name joined as a string, nothing folded', () => {
    expect(readName('../d/./v.qcow2', '/s/img/')).toEqual(files('/s/img/../d/./v.qcow2'));
    expect(readName('./foo:bar.qcow2', '/s/')).toEqual(files('/s/./foo:bar.qcow2'));
  });
  test('an empty name opens nothing QEMU could name: unresolved', () => {
    unresolvedOnly(readName('', '/s/'), /^"" is relative to the working directory/);
  });
});

describe('protocols', () => {
  test.each(['file', 'host_device', 'host_cdrom'])('%s: with an absolute path, that path', (p) => {
    expect(readName(`${p}:/s/v.qcow2`, '/img/')).toEqual(files('/s/v.qcow2'));
  });
  test('file: with a relative path opens against the opener cwd, not the image directory', () => {
    unresolvedOnly(readName('file:v.qcow2', '/img/'), /^"file:v\.qcow2" is relative to the working directory/);
  });
  test.each(['null-co://', 'null-aio://'])('%s opens no file', (name) => {
    expect(readName(name, '/img/')).toEqual({ files: [], unresolved: [] });
  });
  test.each([
    'nbd://127.0.0.1:9/e',
    'nbd+unix:///e?socket=/s/v.qcow2',
    'http://h/v',
    'fat:/s',
    'blkdebug::/s/v',
    'foo:v',
  ])('%s: storage no file of this host stands for', (name) => {
    expect(readName(name, '/img/')).toEqual({
      files: [],
      unresolved: [
        `${JSON.stringify(name)} is opened by QEMU's ${protocolOf(name)} protocol, not as a file of this host`,
      ],
    });
  });
});

describe('json: specifications', () => {
  test('a format node over a file node: the file, whose own names are followed', () => {
    expect(readName(json({ driver: 'qcow2', file: { driver: 'file', filename: '/s/v.qcow2' } }), '/img/')).toEqual(
      files('/s/v.qcow2'),
    );
  });
  test('dotted keys and nested objects are the same tree', () => {
    const dotted = readName(json({ driver: 'qcow2', 'file.driver': 'file', 'file.filename': '/s/v.qcow2' }), '/img/');
    expect(dotted).toEqual(files('/s/v.qcow2'));
    expect(readName(json({ driver: 'qcow2', file: { driver: 'file' }, 'file.filename': '/s/v.qcow2' }), '/i/')).toEqual(
      files('/s/v.qcow2'),
    );
  });
  test('a probed format over a filename, and a top-level filename', () => {
    expect(readName(json({ file: { filename: '/s/v.qcow2' } }), '/img/')).toEqual(files('/s/v.qcow2'));
    expect(readName(json({ driver: 'qcow2', filename: 'file:/s/v.qcow2' }), '/img/')).toEqual(files('/s/v.qcow2'));
    expect(readName(json({ driver: 'file', filename: '/s/v.qcow2' }), '/img/')).toEqual(files('/s/v.qcow2'));
  });
  test('an explicit backing replaces the header backing of the file under it, and is read too', () => {
    const r = readName(
      json({
        driver: 'qcow2',
        file: { driver: 'file', filename: '/s/o.qcow2' },
        backing: { driver: 'qcow2', file: { driver: 'file', filename: '/s/v.qcow2' } },
      }),
      '/img/',
    );
    expect(r).toEqual({ files: [file('/s/o.qcow2', false, true), file('/s/v.qcow2')], unresolved: [] });
  });
  test('backing null and data-file null: the header names of the file are not followed', () => {
    const r = readName(
      json({ driver: 'qcow2', file: { driver: 'file', filename: '/s/v.qcow2' }, backing: null, 'data-file': null }),
      '/img/',
    );
    expect(r).toEqual({ files: [file('/s/v.qcow2', false, false)], unresolved: [] });
  });
  test('a filter over children (quorum, blkverify) opens each child', () => {
    const r = readName(
      json({
        driver: 'quorum',
        children: [
          { driver: 'file', filename: '/s/a' },
          { driver: 'file', filename: '/s/b' },
        ],
        'vote-threshold': 1,
      }),
      '/img/',
    );
    expect(r).toEqual(files('/s/a', '/s/b'));
  });
  test("a prefixed filename: read as a protocol in a backing or file child, not in another child (QEMU 7.2.13's literal names)", () => {
    expect(readName(json({ driver: 'qcow2', file: { filename: 'file:/s/v' } }), '/i/')).toEqual(files('/s/v'));
    expect(
      readName(json({ driver: 'qcow2', file: { filename: '/s/o' }, backing: { filename: 'file:/s/v' } }), '/i/'),
    ).toEqual({ files: [file('/s/o', false, true), file('/s/v')], unresolved: [] });
    for (const spec of [
      { driver: 'quorum', children: [{ filename: 'file:/s/v' }] },
      { driver: 'qcow2', file: { filename: '/s/o' }, 'data-file': { filename: 'file:/s/v' } },
    ])
      expect(readName(json(spec), '/i/').unresolved).toEqual([
        expect.stringMatching(/filename "file:\/s\/v" is read literally by some QEMU builds, as a protocol by others$/),
      ]);
    // An absolute name without a prefix is the same file either way.
    expect(readName(json({ driver: 'quorum', children: [{ filename: '/s/v' }] }), '/i/')).toEqual(files('/s/v'));
  });
  test('a string naming a child (file, image, test, raw, log) is a node reference', () => {
    expect(readName(json({ driver: 'blkdebug', image: 'n2' }), '/i/').unresolved).toEqual([
      expect.stringMatching(/option image refers to a node by its name \("n2"\)$/),
    ]);
  });
  test('null-co nodes open nothing', () => {
    expect(readName(json({ driver: 'null-co' }), '/img/')).toEqual({ files: [], unresolved: [] });
  });
  test.each([
    [
      'a relative filename (the opener cwd)',
      { driver: 'qcow2', file: { driver: 'file', filename: 'v.qcow2' } },
      /relative to the working directory/,
    ],
    ['a file node without a filename', { driver: 'qcow2', file: { driver: 'file' } }, /a file node without a filename/],
    [
      'a network driver',
      { driver: 'nbd', server: { type: 'inet', host: 'h', port: '9' } },
      /the nbd driver reaches storage/,
    ],
    ['a driver that is not a name', { driver: 7 }, /a driver that is not a name/],
    [
      'a node reference for the file',
      { driver: 'qcow2', file: 'node0' },
      /option file refers to a node by its name \("node0"\)/,
    ],
    [
      'a node reference for a backing',
      { driver: 'qcow2', file: { driver: 'file', filename: '/s/v' }, backing: 'n1' },
      /backing refers to a node by its name \("n1"\)/,
    ],
    [
      'a node reference among children',
      { driver: 'quorum', children: ['n1'] },
      /option 0 refers to a node by its name/,
    ],
    [
      'an option naming a path',
      { driver: 'blkdebug', config: '/etc/cfg', image: { driver: 'file', filename: '/s/v' } },
      /option config names "\/etc\/cfg"/,
    ],
  ])('%s: unresolved', (_what, spec, why) => {
    expect(readName(json(spec), '/img/').unresolved).toEqual([expect.stringMatching(why)]);
  });
  test("JSON this reader cannot parse (QEMU's single quotes), or that is no object: unresolved", () => {
    unresolvedOnly(
      readName("json:{'driver':'file','filename':'/s/v'}", '/img/'),
      /json: specification this guard cannot parse/,
    );
    unresolvedOnly(readName('json:["/s/v"]', '/img/'), /keys QEMU would merge ambiguously/);
  });
  test('keys that clash once flattened, or an escaped dot: unresolved', () => {
    unresolvedOnly(
      readName('json:{"file.filename":"/s/a","file":{"filename":"/s/b"}}', '/img/'),
      /keys QEMU would merge ambiguously/,
    );
    unresolvedOnly(readName(json({ file: 'x', 'file.filename': '/s/v' }), '/img/'), /merge ambiguously/);
    unresolvedOnly(readName(json({ 'file..name': '/s/v' }), '/img/'), /merge ambiguously/);
    unresolvedOnly(readName(json({ file: { filename: '/a' }, 'file.filename': '/b' }), '/img/'), /merge ambiguously/);
  });
  test('scalars other than names are options, not files', () => {
    expect(
      readName(
        json({
          driver: 'qcow2',
          'cache.direct': true,
          'l2-cache-size': 1,
          file: { driver: 'file', filename: '/s/v', locking: 'off' },
        }),
        '/i/',
      ),
    ).toEqual(files('/s/v'));
  });
  test('a json: name inside a specification is not read again', () => {
    unresolvedOnly(readName(json({ driver: 'qcow2', filename: 'json:{}' }), '/img/'), /opened by QEMU's json protocol/);
  });
});

describe('data file names', () => {
  test('absolute: that path, read literally', () => {
    expect(readDataFileName('/s/d/data.raw')).toEqual(files('/s/d/data.raw'));
  });
  test.each(['data.raw', 'file:/s/data.raw', 'json:{"filename":"/s/d"}'])(
    '%s: the opener cwd (or, before QEMU 7.2.13, a protocol): unresolved',
    (name) => {
      unresolvedOnly(readDataFileName(name), /relative to the working directory/);
    },
  );
});

/**
 * The names a path reduces to (src/volume-users/names.ts): which of two paths to one inode are the
 * same name (a symlink or bind mount on the way) and which are two names (hard links). Real files
 * in a temp dir, against mount tables written here so each rule is seen on its own.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { canonicalName, type MountTable, parseMountinfo, sameName } from '../../src/volume-users';

let dir: string;
const at = (...p: string[]): string => path.join(dir, ...p);

beforeEach(() => {
  dir = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'names-')));
  fs.mkdirSync(at('a'));
  fs.mkdirSync(at('ab'));
  fs.writeFileSync(at('a/v.qcow2'), '');
  fs.writeFileSync(at('ab/v.qcow2'), '');
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('parseMountinfo', () => {
  test('reads device, root and mount point; skips lines too short or without a major:minor', () => {
    const text = [
      '22 1 254:0 / / rw,relatime - ext4 /dev/vda1 rw',
      '23 22 0:310 /x /mnt/five', // five fields: all that is read
      '24 22 0:31 /short', // four fields
      '25 22 x0:31 / /mnt/a rw - tmpfs tmpfs rw',
      '26 22 0:31x / /mnt/b rw - tmpfs tmpfs rw',
      '27 22 0:31:2 / /mnt/c rw - tmpfs tmpfs rw',
      '',
    ].join('\n');
    expect(parseMountinfo(text)).toEqual([
      { majorMinor: '254:0', root: '/', mountPoint: '/' },
      { majorMinor: '0:310', root: '/x', mountPoint: '/mnt/five' },
    ]);
  });
});

describe('canonicalName', () => {
  test('the mount a path lies on is swapped for its device and root; a prefix of a name is not its parent', () => {
    const mounts: MountTable = [
      { majorMinor: '1:1', root: '/', mountPoint: '/' },
      { majorMinor: '2:2', root: '/srv', mountPoint: at('a') },
    ];
    expect(canonicalName(at('a/v.qcow2'), mounts)).toBe('2:2:/srv/v.qcow2');
    expect(canonicalName(at('ab/v.qcow2'), mounts)).toBe(`1:1:${at('ab/v.qcow2')}`);
  });

  test('the mount point itself is the root of its file system', () => {
    const mounts: MountTable = [
      { majorMinor: '1:1', root: '/', mountPoint: '/' },
      { majorMinor: '2:2', root: '/srv', mountPoint: at('a') },
    ];
    expect(canonicalName(at('a'), mounts)).toBe('2:2:/srv');
    expect(canonicalName('/', mounts)).toBe('1:1:/');
  });

  test('the longest mount point wins, whatever the order; on one mount point, the last listed (the visible one)', () => {
    const root = { majorMinor: '1:1', root: '/', mountPoint: '/' };
    const outer = { majorMinor: '2:2', root: '/outer', mountPoint: dir };
    const inner = { majorMinor: '3:3', root: '/inner', mountPoint: at('a') };
    const over = { majorMinor: '4:4', root: '/over', mountPoint: at('a') };
    expect(canonicalName(at('a/v.qcow2'), [root, inner, outer])).toBe('3:3:/inner/v.qcow2');
    expect(canonicalName(at('a/v.qcow2'), [root, outer, inner])).toBe('3:3:/inner/v.qcow2');
    expect(canonicalName(at('a/v.qcow2'), [root, inner, over, outer])).toBe('4:4:/over/v.qcow2');
    expect(canonicalName(at('ab/v.qcow2'), [root, inner, over])).toBe(`1:1:${at('ab/v.qcow2')}`);
  });

  test('no mount holds the path, or the path does not exist: undefined', () => {
    expect(canonicalName(at('a/v.qcow2'), [{ majorMinor: '2:2', root: '/', mountPoint: at('ab') }])).toBeUndefined();
    expect(canonicalName(at('a/none'), [{ majorMinor: '1:1', root: '/', mountPoint: '/' }])).toBeUndefined();
  });
});

describe('sameName', () => {
  const mounts: MountTable = [{ majorMinor: '1:1', root: '/', mountPoint: '/' }];

  test('a symlinked directory on the way is the same name; a hard link is another', () => {
    fs.symlinkSync(at('a'), at('alias'));
    fs.linkSync(at('a/v.qcow2'), at('a/hard.qcow2'));
    expect(sameName(at('alias/v.qcow2'), at('a/v.qcow2'), mounts)).toBe(true);
    expect(sameName(at('a/hard.qcow2'), at('a/v.qcow2'), mounts)).toBe(false);
  });

  test('a file bind-mounted on another path is the same name', () => {
    const bound: MountTable = [...mounts, { majorMinor: '1:1', root: at('ab/v.qcow2'), mountPoint: at('a/v.qcow2') }];
    expect(sameName(at('a/v.qcow2'), at('ab/v.qcow2'), bound)).toBe(true);
  });

  test('a real file bind mount, in a mount namespace of its own: the mount point and the file are one name', () => {
    // sameName of the mount point and its source, with the namespace's own /proc/self/mountinfo.
    const script =
      'const { sameName } = require(process.argv[1]); process.stdout.write(JSON.stringify(sameName(process.argv[2], process.argv[3])))';
    const out = execFileSync(
      'unshare',
      [
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        'mount --bind "$1" "$2" && exec "$3" --import tsx -e "$4" "$5" "$2" "$1"',
        'sh',
        at('ab/v.qcow2'),
        at('a/v.qcow2'),
        process.execPath,
        script,
        path.resolve(__dirname, '../../src/volume-users/names.ts'),
      ],
      { encoding: 'utf8' },
    );
    expect(out).toBe('true');
  });

  test('when either name cannot be resolved it cannot be told (undefined), never "another name"', () => {
    expect(sameName(at('a/v.qcow2'), at('a/gone'), mounts)).toBeUndefined();
    expect(sameName(at('a/gone'), at('a/v.qcow2'), mounts)).toBeUndefined();
    expect(sameName(at('a/gone'), at('b/gone'), mounts)).toBeUndefined();
  });
});

/**
 * The merge input as the workflows take it: ids become file names and job ids, so the id schema
 * is what keeps `/` and `..` out of every path; the disk rules and the error text a caller reads.
 */
import {
  describeIssues,
  diskMergeInputSchema,
  diskSpecSchema,
  idSchema,
  liveMergeInputSchema,
  speedModeOf,
} from '../../src/domain/input';

const disk = (diskId: string, top = 'v2', base = 'v1') => ({ diskId, topVolumeId: top, baseVolumeId: base });
const issues = (r: { success: boolean; error?: Parameters<typeof describeIssues>[0] }): string =>
  r.success || !r.error ? 'ok' : describeIssues(r.error);

describe('ids', () => {
  test('letters, digits, "-" and "_", starting with a letter or digit, 1 to 64 characters', () => {
    for (const ok of ['a', '0', 'vm-1_A', 'Z'.repeat(64), '9-_']) expect(idSchema.parse(ok)).toBe(ok);
  });

  test('nothing that could be read as a path, an option or a QMP word', () => {
    const letters = 'must be letters, digits, "-" or "_", starting with a letter or digit';
    for (const bad of ['..', '.', 'a/b', '/a', 'a/../b', '-a', '_a', 'a b', 'a.b', 'a\nb', 'a\0', 'ü', 'a,b']) {
      expect(issues(idSchema.safeParse(bad))).toBe(`(input): ${letters}`);
    }
    expect(issues(idSchema.safeParse(''))).toMatch(/^\(input\): must not be empty/);
    expect(issues(idSchema.safeParse('a'.repeat(65)))).toBe('(input): must be at most 64 characters');
  });
});

describe('disks', () => {
  test('a top that is its own base is refused, on the top', () => {
    expect(issues(diskSpecSchema.safeParse(disk('d1', 'v1', 'v1')))).toBe(
      'topVolumeId: topVolumeId must differ from baseVolumeId',
    );
    expect(diskSpecSchema.parse(disk('d1'))).toEqual(disk('d1'));
  });

  test('no field beyond the three', () => {
    expect(issues(diskSpecSchema.safeParse({ ...disk('d1'), path: '/etc' }))).toMatch(/^\(input\): .*path/);
  });
});

describe('a merge', () => {
  const input = { snapshotId: 's1', vmId: 'vm1', hostId: 'h1' };

  test('a disk named twice is refused, each disk once is taken with the default options', () => {
    expect(issues(liveMergeInputSchema.safeParse({ ...input, disks: [disk('d1'), disk('d1', 'v4', 'v3')] }))).toBe(
      'disks: must not name a disk twice',
    );
    const parsed = liveMergeInputSchema.parse({ ...input, disks: [disk('d1'), disk('d2')] });
    expect(parsed.disks.map((d) => d.diskId)).toEqual(['d1', 'd2']);
    expect(parsed.options).toMatchObject({
      pollIntervalMs: 500,
      bandwidthBytesPerSec: 0,
      hostPickupTimeoutSeconds: 120,
    });
  });

  test('every problem is named with its field path', () => {
    const r = liveMergeInputSchema.safeParse({ ...input, vmId: '../vm', disks: [disk('d1'), disk('d/2', 'x', 'x')] });
    expect(issues(r)).toBe(
      [
        'vmId: must be letters, digits, "-" or "_", starting with a letter or digit',
        'disks.1.diskId: must be letters, digits, "-" or "_", starting with a letter or digit',
        'disks.1.topVolumeId: topVolumeId must differ from baseVolumeId',
      ].join('; '),
    );
  });

  test("one disk's merge: the same disk rules, its ids checked again", () => {
    expect(issues(diskMergeInputSchema.safeParse({ ...input, disk: disk('d1', 'v1', 'v1') }))).toBe(
      'disk.topVolumeId: topVolumeId must differ from baseVolumeId',
    );
    expect(issues(diskMergeInputSchema.safeParse({ ...input, hostId: 'h1/..', disk: disk('d1') }))).toBe(
      'hostId: must be letters, digits, "-" or "_", starting with a letter or digit',
    );
  });
});

describe('the speed options', () => {
  const input = { snapshotId: 's1', vmId: 'vm1', hostId: 'h1', disks: [disk('d1')] };
  const options = (o: object) => liveMergeInputSchema.safeParse({ ...input, options: o });

  test('adaptive by default, fixed when a limit is given, or as asked', () => {
    const parsed = liveMergeInputSchema.parse(input).options;
    expect(parsed.latencyFactor).toBe(2);
    expect(speedModeOf(parsed)).toBe('adaptive');
    expect(speedModeOf(liveMergeInputSchema.parse({ ...input, options: {} }).options)).toBe('adaptive');
    const limited = liveMergeInputSchema.parse({ ...input, options: { bandwidthBytesPerSec: 1 } }).options;
    expect(speedModeOf(limited)).toBe('fixed');
    const unlimitedFixed = liveMergeInputSchema.parse({ ...input, options: { speedMode: 'fixed' } }).options;
    expect(speedModeOf(unlimitedFixed)).toBe('fixed');
    const asked = liveMergeInputSchema.parse({ ...input, options: { speedMode: 'adaptive', bandwidthBytesPerSec: 0 } });
    expect(speedModeOf(asked.options)).toBe('adaptive');
  });

  test('adaptive with a limit is refused, naming speedMode; fixed with one is taken', () => {
    expect(issues(options({ speedMode: 'adaptive', bandwidthBytesPerSec: 1 }))).toBe(
      'options.speedMode: adaptive sets the speed itself: leave bandwidthBytesPerSec out, or choose speedMode fixed',
    );
    expect(issues(options({ speedMode: 'fixed', bandwidthBytesPerSec: 1 }))).toBe('ok');
    expect(issues(options({ speedMode: 'fast' }))).toMatch(/^options\.speedMode: /);
  });

  test('the latency factor is from 1.1 to 100', () => {
    expect(issues(options({ latencyFactor: 1.1 }))).toBe('ok');
    expect(issues(options({ latencyFactor: 100 }))).toBe('ok');
    expect(issues(options({ latencyFactor: 1.09 }))).toMatch(/^options\.latencyFactor: /);
    expect(issues(options({ latencyFactor: 100.5 }))).toMatch(/^options\.latencyFactor: /);
  });
});

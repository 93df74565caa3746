/**
 * The bounds of each number and list a merge request holds, at both ends: a caller reads which
 * field was out of range, and a value at the bound is taken as given.
 */
import { describeIssues, diskMergeInputSchema, liveMergeInputSchema } from '../../src/domain/input';

const disk = (diskId: string) => ({ diskId, topVolumeId: 'v2', baseVolumeId: 'v1' });
const request = { snapshotId: 's1', vmId: 'vm1', hostId: 'h1', disks: [disk('d1')] };
const problems = (input: unknown): string => {
  const r = liveMergeInputSchema.safeParse(input);
  return r.success ? 'ok' : describeIssues(r.error);
};
const withOption = (field: string, value: number): unknown => ({ ...request, options: { [field]: value } });

test.each([
  ['pollIntervalMs', 50, 60_000],
  ['bandwidthBytesPerSec', 0, Number.MAX_SAFE_INTEGER],
  ['hostPickupTimeoutSeconds', 1, 86_400],
])('%s takes %d to %d and nothing beyond', (field, min, max) => {
  for (const value of [min, min + 1, max - 1, max]) {
    const parsed = liveMergeInputSchema.parse(withOption(field, value));
    expect(parsed.options).toMatchObject({ [field]: value });
  }
  expect(problems(withOption(field, min - 1))).toMatch(new RegExp(`^options\\.${field}: Too small`));
  expect(problems(withOption(field, max + 1))).toMatch(new RegExp(`^options\\.${field}: Too big`));
});

test('a merge names 1 to 64 disks', () => {
  expect(problems({ ...request, disks: [] })).toBe('disks: must name at least one disk');
  const disks = Array.from({ length: 65 }, (_, i) => disk(`d${i}`));
  expect(problems({ ...request, disks: disks.slice(0, 64) })).toBe('ok');
  expect(problems({ ...request, disks })).toBe('disks: must name at most 64 disks');
});

test("a disk's parent workflow id is 1 to 1000 characters", () => {
  const child = (parentWorkflowId: string): string => {
    const r = diskMergeInputSchema.safeParse({
      snapshotId: 's1',
      vmId: 'vm1',
      hostId: 'h1',
      disk: disk('d1'),
      parentWorkflowId,
    });
    return r.success ? 'ok' : describeIssues(r.error);
  };
  for (const ok of ['w', 'w'.repeat(2), 'w'.repeat(999), 'w'.repeat(1000)]) expect(child(ok)).toBe('ok');
  expect(child('')).toMatch(/^parentWorkflowId: Too small/);
  expect(child('w'.repeat(1001))).toMatch(/^parentWorkflowId: Too big/);
});

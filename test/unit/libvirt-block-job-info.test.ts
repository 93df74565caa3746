import { BlockJobInfoError, parseBlockJobInfo } from '../../src/drivers/libvirt/block-job-info';

describe('virsh blockjob --info --raw, a value to the end of its line', () => {
  test('a value cut by a line separator (U+2028) is refused, not read as the part before it', () => {
    expect(() => parseBlockJobInfo(' type=Active Block Commit\n cur=5\u20280\n end=100\n')).toThrow(BlockJobInfoError);
  });

  test('the same job with the whole value is read', () => {
    expect(parseBlockJobInfo(' type=Active Block Commit\n cur=50\n end=100\n')).toEqual({
      type: 'Active Block Commit',
      cur: 50,
      end: 100,
    });
  });
});

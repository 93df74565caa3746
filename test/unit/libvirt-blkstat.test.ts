import { parseBlkStat } from '../../src/drivers/libvirt/blkstat';

/** `virsh -q domblkstat <domain> vda` of a lab domain whose guest writes (libvirt 9.0). */
const CAPTURED = `vda rd_req 2
vda rd_bytes 4608
vda wr_req 69
vda wr_bytes 282624
vda flush_operations 138
vda rd_total_times 319407
vda wr_total_times 25545912
vda flush_total_times 106358174
`;

test("libvirt's counters as the guest's I/O: requests and their total times by kind", () => {
  expect(parseBlkStat(CAPTURED)).toEqual({
    readOps: 2,
    readNs: 319407,
    writeOps: 69,
    writeNs: 25545912,
    flushOps: 138,
    flushNs: 106358174,
  });
});

test('times and flushes libvirt does not report are 0; no request counts at all is an error, not an idle guest', () => {
  expect(parseBlkStat('vda rd_req 5\nvda wr_req 7\nvda errs 0\n')).toEqual({
    readOps: 5,
    readNs: 0,
    writeOps: 7,
    writeNs: 0,
    flushOps: 0,
    flushNs: 0,
  });
  expect(() => parseBlkStat('')).toThrow('virsh domblkstat gave no rd_req');
  expect(() => parseBlkStat('vda rd_req 5\n')).toThrow('virsh domblkstat gave no wr_req');
});

/** What the ACK log says per disk: the last acknowledged record at each offset, and the log's own problems. */
import type { AckLine } from './acks';
import type { LabGuest } from './config';
import type { GuestProblem } from './report';

export interface DiskAcks {
  /** offset → highest acknowledged seq there */
  lastAt: Map<number, number>;
  /** seq → offset */
  offsetOf: Map<number, number>;
  count: number;
  lastSeq: number;
  done?: number;
}

export function collectAcks(
  lines: AckLine[],
  disks: number,
  g: LabGuest,
  logProblem: (p: GuestProblem) => void,
): DiskAcks[] {
  const out: DiskAcks[] = Array.from({ length: disks }, () => ({
    lastAt: new Map(),
    offsetOf: new Map(),
    count: 0,
    lastSeq: 0,
  }));
  const starts = lines.filter((l) => l.kind === 'START');
  if (starts.length > 1)
    logProblem({ kind: 'ack-log', detail: `${starts.length} START lines: the guest ran more than once` });
  for (const s of starts) {
    const want = {
      nonce: g.nonce,
      disks,
      regionOffset: g.regionOffset,
      regionLength: g.regionLength,
      recordSize: g.recordSize,
      rate: g.rate,
    };
    const diff = (Object.keys(want) as (keyof typeof want)[]).filter((k) => s[k] !== want[k]);
    if (diff.length > 0)
      logProblem({
        kind: 'ack-log',
        detail: `START line differs from the manifest in ${diff.map((k) => `${k} (${s[k]} ≠ ${want[k]})`).join(', ')}`,
      });
  }
  for (const l of lines) {
    if (l.kind === 'ERR') logProblem({ kind: 'guest-error', detail: `the writer reported: ${l.text}` });
    if (l.kind !== 'ACK' && l.kind !== 'DONE') continue;
    const d = out[l.disk];
    if (!d) {
      logProblem({ kind: 'ack-log', detail: `${l.kind} line for disk ${l.disk}, which the VM does not have` });
      continue;
    }
    if (l.kind === 'DONE') {
      d.done = l.writes;
      continue;
    }
    if (l.seq !== d.lastSeq + 1)
      logProblem({ kind: 'ack-log', detail: `disk ${l.disk}: ACK seq ${l.seq} follows seq ${d.lastSeq}` });
    const end = g.regionOffset + g.regionLength;
    if (l.offset < g.regionOffset || l.offset + g.recordSize > end || (l.offset - g.regionOffset) % g.recordSize)
      logProblem({
        kind: 'ack-log',
        offset: l.offset,
        detail: `disk ${l.disk}: ACK seq ${l.seq} at offset ${l.offset}, not a record slot of the region [${g.regionOffset}, ${end})`,
      });
    d.count++;
    d.lastSeq = Math.max(d.lastSeq, l.seq);
    d.offsetOf.set(l.seq, l.offset);
    d.lastAt.set(l.offset, Math.max(d.lastAt.get(l.offset) ?? 0, l.seq));
  }
  return out;
}

import type { GuestIo } from '../../domain/speed';

/**
 * `virsh domblkstat <domain> <target>`: one `<target> <field> <value>` line per counter (libvirt's
 * virDomainBlockStatsFlags; total times in ns). The request counts must be there; a time or flush
 * counter libvirt does not report is 0.
 */
export function parseBlkStat(text: string): GuestIo {
  const fields = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^\S+\s+(\w+)\s+(\d+)\s*$/.exec(line.trim());
    if (m) fields.set(m[1], Number(m[2]));
  }
  for (const required of ['rd_req', 'wr_req'])
    if (!fields.has(required))
      throw new Error(`virsh domblkstat gave no ${required}: ${JSON.stringify(text.slice(0, 200))}`);
  const field = (name: string): number => fields.get(name) ?? 0;
  return {
    readOps: field('rd_req'),
    readNs: field('rd_total_times'),
    writeOps: field('wr_req'),
    writeNs: field('wr_total_times'),
    flushOps: field('flush_operations'),
    flushNs: field('flush_total_times'),
  };
}

import { type GuestCheckReport, type LabGuest, readAckLog } from '../guest';
import type { LibvirtGuestStop } from '../libvirt/guest';
import type { LabVm, LabVmStopped, VerifyReport } from '../vm';

/** The guest's ACK lines per disk so far (a QMP lab VM or a libvirt one). */
export async function acksPerDisk(vm: Pick<LabVm, 'disks'> & { guest?: LabGuest }): Promise<number[]> {
  const counts = vm.disks.map(() => 0);
  if (!vm.guest) return counts;
  for (const l of (await readAckLog(vm.guest.ackLog)).lines) if (l.kind === 'ACK') counts[l.disk]++;
  return counts;
}

/** The guest's writes during the merge and what the check found, after the guest stopped. */
export function renderGuestCheck(
  report: GuestCheckReport,
  duringMerge: number[],
  stopped: LabVmStopped | LibvirtGuestStop,
  /** When the counted writes were made: during a live merge, or before an offline one. */
  when = 'during the merge',
): string {
  const lines = [
    `guest writes: ${report.disks.map((d, i) => `${d.diskId} ${duringMerge[i]} ${when} (${d.acknowledged} in all)`).join(', ')}; ${stopped === 'guest-powered-off' ? 'then the guest powered off' : `the guest: ${stopped}`}`,
    `guest check: ${report.ok ? 'PASSED' : 'FAILED'}: ${report.disks
      .map(
        (d) =>
          `${d.diskId} ${d.found}/${d.offsetsAcknowledged} acknowledged offsets found (${d.acknowledged} writes), ${d.lost} lost`,
      )
      .join('; ')}`,
  ];
  for (const p of report.problems.slice(0, 10)) lines.push(`  ${p.kind}${p.diskId ? ` ${p.diskId}` : ''}: ${p.detail}`);
  return lines.join('\n');
}

export function renderChains(title: string, report: VerifyReport): string {
  const lines = [title];
  for (const d of report.disks) lines.push(`  ${d.diskId}: ${d.chain.join(' -> ')}   (active first, base last)`);
  return lines.join('\n');
}

export function renderVerification(report: VerifyReport): string {
  const lines = [`data verification: ${report.ok ? 'PASSED' : 'FAILED'}`];
  for (const d of report.disks) {
    const good = d.regions.filter((r) => r.ok).length;
    lines.push(
      `  ${d.diskId}: ${good}/${d.regions.length} regions read back their layer's pattern through ${d.chain.length} volume(s)${d.chainOk ? '' : ` (chain mismatch: ${d.chainDetail ?? ''})`}`,
    );
    for (const r of d.regions.filter((x) => !x.ok))
      lines.push(`    region @${r.offset}: expected 0x${r.pattern.toString(16)}: ${r.detail ?? 'mismatch'}`);
  }
  return lines.join('\n');
}

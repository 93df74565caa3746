import type { VerifyReport } from '../vm';

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

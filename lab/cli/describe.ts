/** What the lab command prints: a lab VM, a verify report, a guest check report. */
import * as path from 'node:path';

import type { GuestCheckReport } from '../guest';
import { hexPattern, type LabVm, type VerifyReport } from '../vm';

const MiB = 1024 * 1024;
const mib = (bytes: number): string => `${bytes / MiB} MiB`;

export function describeVm(vm: LabVm): string {
  const lines = [
    `lab VM ${vm.vmId} (pid ${vm.pid}), ${vm.disks.length} disk(s), ${vm.sizeMiB} MiB each`,
    `  run dir:      ${path.join(vm.runDir, vm.vmId)}`,
    `  storage root: ${vm.storageRoot}`,
    `  QMP:          ${vm.qmpSocket}`,
    `  aux QMP:      ${vm.auxQmpSocket}`,
  ];
  if (vm.guest) {
    const g = vm.guest;
    lines.push(
      `  guest:        writes ${g.recordSize}-byte records to [${mib(g.regionOffset)}, ${mib(g.regionOffset + g.regionLength)}) of every disk, ` +
        `${g.rate ? `${g.rate}/s` : 'unthrottled'}, nonce ${g.nonce}`,
      `  ACK log:      ${g.ackLog}`,
      `  console:      ${g.consoleSocket} (log ${g.consoleLog})`,
    );
  }
  for (const d of vm.disks) {
    lines.push(`  ${d.diskId}: ${[...d.volumeIds].reverse().join(' → ')} (active first, base last)`);
    for (const r of d.regions) {
      lines.push(
        `    [${mib(r.offset)}, ${mib(r.offset + r.length)}) ${r.kind === 'layer' ? `layer ${r.layer}  ` : 'overwrite'} expects ${hexPattern(r.pattern)}`,
      );
    }
  }
  return lines.join('\n');
}

export function describeReport(report: VerifyReport): string {
  const lines: string[] = [];
  for (const d of report.disks) {
    lines.push(
      `${d.diskId}: ${d.ok ? 'ok' : 'FAILED'}  chain ${d.chain.join(' → ') || '(unknown)'}${d.chainOk ? '' : `  [${d.chainDetail ?? 'chain problem'}]`}`,
    );
    for (const r of d.regions) {
      const what = r.kind === 'layer' ? `layer ${r.layer}` : 'overwrite';
      const status = r.ok ? 'ok    ' : r.staleOnDisk ? 'STALE ' : 'FAILED';
      lines.push(
        `  ${status} ${what.padEnd(9)} [${mib(r.offset)}, ${mib(r.offset + r.length)}) ${hexPattern(r.pattern)}${r.detail ? `  ${r.detail}` : ''}`,
      );
    }
  }
  lines.push(`verify ${report.vmId}: ${report.ok ? 'OK' : 'FAILED'}`);
  return lines.join('\n');
}

export function describeGuestReport(report: GuestCheckReport): string {
  const lines = report.disks.map(
    (d) =>
      `${d.diskId}: ${d.acknowledged} write(s) acknowledged (last seq ${d.lastAckedSeq}), ` +
      `${d.found}/${d.offsetsAcknowledged} acknowledged offsets found` +
      `${d.foundLater ? ` (${d.foundLater} with a later unreported write)` : ''}, ${d.lost} lost; ` +
      `chain ${d.chain.join(' → ')}; qemu-img check ${d.imageChecks.every((c) => c.ok) ? 'clean' : 'NOT clean'}`,
  );
  for (const p of report.problems)
    lines.push(
      `  ${p.kind}${p.diskId ? ` ${p.diskId}` : ''}${p.offset === undefined ? '' : ` @${p.offset}`}: ${p.detail}`,
    );
  const more = report.disks.reduce((n, d) => n + d.moreProblems, 0);
  if (more > 0) lines.push(`  … and ${more} more problem(s)`);
  lines.push(
    `check ${report.vmId}: ${report.ok ? 'OK' : 'FAILED'} (${report.stoppedCleanly ? 'the guest stopped cleanly' : 'the guest did not stop cleanly'})`,
  );
  return lines.join('\n');
}

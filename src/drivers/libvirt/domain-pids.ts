import { promises as fs } from 'node:fs';
import * as path from 'node:path';

/** The pid of a running domain's QEMU, from the `<domain>.pid` libvirt writes in `pidDir`; [] when none runs. */
export async function domainPids(pidDir: string, vmId: string): Promise<number[]> {
  try {
    const pid = Number((await fs.readFile(path.join(pidDir, `${vmId}.pid`), 'utf8')).trim());
    if (!Number.isInteger(pid) || pid <= 0) return [];
    await fs.access(`/proc/${pid}`);
    return [pid];
  } catch {
    return [];
  }
}

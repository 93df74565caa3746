import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import type { VmState } from '../driver';
import { DiskNotFoundError, VmNotFoundError } from '../errors';
import { diskIdOf, parseDefinedDisks, parseDomainDisks, withDiskSource } from './domain-xml';
import { type Virsh, VirshCommandError } from './virsh';

/**
 * A domain's persistent definition, which libvirt keeps for a domain that is shut off: whether
 * there is one, the volume each disk starts from, and pointing a disk at another volume
 * (`virsh define`), never while the domain runs.
 */
export class DomainDefinition {
  constructor(private readonly virsh: Virsh) {}

  /** A shut-off domain is persistent (a transient one is gone when it stops): libvirt keeps its definition. */
  async vmState(vmId: string): Promise<VmState> {
    let state: string;
    try {
      state = (await this.virsh.run(['domstate', vmId])).trim();
    } catch (err) {
      if (err instanceof VmNotFoundError) return { running: false, definition: 'caller' };
      throw err;
    }
    return state === 'shut off' ? { running: false, definition: 'hypervisor' } : { running: true };
  }

  async definedActive(vmId: string, diskId: string): Promise<string> {
    const disk = parseDefinedDisks(await this.virsh.run(['dumpxml', '--inactive', vmId])).find(
      (d) => diskIdOf(d) === diskId,
    );
    if (!disk) throw new DiskNotFoundError(`domain ${vmId} has no disk ${diskId}`);
    return disk.layers[0].path;
  }

  async redefineActive(vmId: string, diskId: string, from: string, to: string): Promise<void> {
    const refuse = (why: string) => new VirshCommandError(['define', vmId], why);
    const now = await this.definedActive(vmId, diskId);
    if (now === to) return;
    if (now !== from) throw refuse(`disk ${diskId} starts from ${now}, neither ${from} nor ${to}`);
    if ((await this.vmState(vmId)).running) throw refuse(`domain ${vmId} runs: its definition is not changed`);
    const before = await this.virsh.run(['dumpxml', '--inactive', '--security-info', vmId]);
    await this.define(vmId, withDiskSource(before, diskId, to));
    // A start between the check and the define ran from `from`, and would stop to a definition that
    // drops what it wrote since: the definition goes back, and the step refuses.
    if (!(await this.vmState(vmId)).running) return;
    const live = parseDomainDisks(await this.virsh.run(['dumpxml', vmId])).find((d) => diskIdOf(d) === diskId);
    if (live?.layers[0].path === to) return;
    await this.define(vmId, before);
    throw refuse(`domain ${vmId} started from ${from} meanwhile: its definition is left as it was`);
  }

  private async define(vmId: string, xml: string): Promise<void> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'live-merge-define-'));
    try {
      const file = path.join(dir, `${vmId}.xml`);
      await fs.writeFile(file, xml, { mode: 0o600 });
      await this.virsh.run(['define', file]);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }
}

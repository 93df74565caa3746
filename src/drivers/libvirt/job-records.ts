import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { z } from 'zod';

import { vmRunDir } from '../../domain/layout';

/**
 * What the driver started on a disk, kept in a file under the VM's run dir: libvirt knows a
 * disk's job by the disk alone, and forgets it once it ends. The record gives the job its id
 * after an agent restart, and tells what to look for in the chain to learn how the job ended.
 */
export const jobRecordSchema = z
  .object({
    jobId: z.string().min(1),
    target: z.string().min(1),
    kind: z.enum(['active', 'intermediate']),
    topPath: z.string().min(1),
    basePath: z.string().min(1),
    /** Set when this driver asked for an abort, with the job's state then: in ready a clean end, no pivot. */
    abortedIn: z.enum(['running', 'ready']).optional(),
  })
  .strict();
export type JobRecord = z.infer<typeof jobRecordSchema>;

export class JobRecords {
  constructor(private readonly runDir: string) {}

  private dir(vmId: string): string {
    return path.join(vmRunDir(this.runDir, vmId), 'libvirt-jobs');
  }

  private file(vmId: string, target: string): string {
    return path.join(this.dir(vmId), `${target}.json`);
  }

  async write(vmId: string, record: JobRecord): Promise<void> {
    await fs.mkdir(this.dir(vmId), { recursive: true });
    const file = this.file(vmId, record.target);
    await fs.writeFile(`${file}.tmp`, JSON.stringify(record));
    await fs.rename(`${file}.tmp`, file);
  }

  async all(vmId: string): Promise<JobRecord[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.dir(vmId));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const records: JobRecord[] = [];
    for (const name of names.filter((n) => n.endsWith('.json'))) {
      const parsed = jobRecordSchema.safeParse(JSON.parse(await fs.readFile(path.join(this.dir(vmId), name), 'utf8')));
      if (parsed.success) records.push(parsed.data);
    }
    return records;
  }

  async byId(vmId: string, jobId: string): Promise<JobRecord | undefined> {
    return (await this.all(vmId)).find((r) => r.jobId === jobId);
  }

  async remove(vmId: string, target: string): Promise<void> {
    await fs.rm(this.file(vmId, target), { force: true });
  }
}

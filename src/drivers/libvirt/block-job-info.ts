import { z } from 'zod';

/** A disk's block job as `virsh blockjob DOM DISK --info --raw` reports it; undefined when none. */
export interface BlockJobInfo {
  type: string;
  cur: number;
  end: number;
}

const rawSchema = z.object({
  type: z.string().min(1),
  cur: z.coerce.number().int().min(0),
  end: z.coerce.number().int().min(0),
});

export class BlockJobInfoError extends Error {
  override name = 'BlockJobInfoError';
}

/** Parses lines ` type=Active Block Commit`, ` cur=N`, ` end=N`; empty output is no job. */
export function parseBlockJobInfo(stdout: string): BlockJobInfo | undefined {
  const fields: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const m = /^\s*([a-z_]+)=(.*)$/.exec(line);
    if (m) fields[m[1]] = m[2].trim();
  }
  if (Object.keys(fields).length === 0) return undefined;
  const parsed = rawSchema.safeParse(fields);
  if (!parsed.success) throw new BlockJobInfoError(`unexpected virsh blockjob --info --raw output: ${stdout.trim()}`);
  return parsed.data;
}

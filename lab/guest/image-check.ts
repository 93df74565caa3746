/** `qemu-img check` of one volume, its JSON output parsed with zod. */
import { z } from 'zod';

import { describeIssues } from '../../src/domain/input';
import { run } from '../vm/processes';

const imgCheckSchema = z.looseObject({
  'check-errors': z.number().int(),
  corruptions: z.number().int().optional(),
  leaks: z.number().int().optional(),
});

/** `qemu-img check` of one volume (no lock taken: `-U`); exit 0 and no errors, corruptions or leaks. */
export async function checkImage(file: string): Promise<{ ok: boolean; detail?: string }> {
  const r = await run('qemu-img', ['check', '-U', '--output=json', '-f', 'qcow2', file]);
  let raw: unknown;
  try {
    raw = JSON.parse(r.stdout);
  } catch {
    return { ok: false, detail: `qemu-img check exited ${r.signal ?? r.code}: ${`${r.stdout}${r.stderr}`.trim()}` };
  }
  const parsed = imgCheckSchema.safeParse(raw);
  if (!parsed.success)
    return { ok: false, detail: `unexpected qemu-img check output: ${describeIssues(parsed.error)}` };
  const { 'check-errors': errors, corruptions = 0, leaks = 0 } = parsed.data;
  if (r.code === 0 && errors === 0 && corruptions === 0 && leaks === 0) return { ok: true };
  return {
    ok: false,
    detail: `qemu-img check exit ${r.code}: ${errors} check error(s), ${corruptions} corruption(s), ${leaks} leaked cluster(s)`,
  };
}

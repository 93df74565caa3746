/** `qemu-img check` of one volume, its JSON output parsed with zod. */
import { z } from 'zod';

import { describeIssues } from '../../src/domain/input';
import { run } from '../vm/processes';

const imgCheckSchema = z.looseObject({
  'check-errors': z.number().int(),
  corruptions: z.number().int().optional(),
  leaks: z.number().int().optional(),
});

/**
 * `qemu-img check` of one volume (no lock taken: `-U`); exit 0 and no errors, corruptions or leaks.
 * With `allowLeaks` (a QEMU that was killed, not stopped) leaked clusters alone pass (exit 3): qcow2
 * raises a cluster's refcount before it maps the cluster, so a kill between the two leaves a
 * cluster counted but unused, which wastes space and loses nothing. They are still counted.
 */
export async function checkImage(
  file: string,
  options: { allowLeaks?: boolean } = {},
): Promise<{ ok: boolean; detail?: string; leakedClusters?: number }> {
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
  if (options.allowLeaks && r.code === 3 && errors === 0 && corruptions === 0)
    return { ok: true, leakedClusters: leaks, detail: `${leaks} leaked cluster(s), allowed after a kill` };
  return {
    ok: false,
    detail: `qemu-img check exit ${r.code}: ${errors} check error(s), ${corruptions} corruption(s), ${leaks} leaked cluster(s)`,
  };
}

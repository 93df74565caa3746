/**
 * The writer's ACK stream (the guest's second serial port, which QEMU writes to
 * `<runDir>/<vmId>/guest-acks.log`), parsed line by line with zod. See lab/guest/writer.c.
 */
import * as fs from 'node:fs/promises';

import { z } from 'zod';

const count = z
  .string()
  .regex(/^\d+$/, 'must be a whole number')
  .transform(Number)
  .pipe(z.number().int().min(0).max(Number.MAX_SAFE_INTEGER));

export const ackLineSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('START'),
    nonce: z.string().regex(/^[0-9a-f]{16}$/),
    disks: count,
    regionOffset: count,
    regionLength: count,
    recordSize: count,
    rate: count,
  }),
  z.object({
    kind: z.literal('ACK'),
    disk: count,
    seq: count.pipe(z.number().min(1)),
    offset: count,
    /** The guest's CLOCK_MONOTONIC when the write returned, µs (writers before it sent no time). */
    tUs: count.optional(),
    /** How long the write (pwrite, O_DIRECT | O_DSYNC) took in the guest, µs. */
    latUs: count.optional(),
  }),
  z.object({ kind: z.literal('STOPPING') }),
  z.object({ kind: z.literal('DONE'), disk: count, writes: count }),
  z.object({ kind: z.literal('ERR'), text: z.string() }),
]);
export type AckLine = z.infer<typeof ackLineSchema>;

const FIELDS: Record<string, readonly string[]> = {
  START: ['nonce', 'disks', 'regionOffset', 'regionLength', 'recordSize', 'rate'],
  ACK: ['disk', 'seq', 'offset', 'tUs', 'latUs'],
  STOPPING: [],
  DONE: ['disk', 'writes'],
};

/** One line (without its end), or a description of what is wrong with it. */
export function parseAckLine(line: string): { ok: true; value: AckLine } | { ok: false; error: string } {
  const [kind, ...rest] = line.split(' ');
  let raw: Record<string, unknown>;
  if (kind === 'ERR') raw = { kind, text: rest.join(' ') };
  else {
    const all = FIELDS[kind];
    if (!all) return { ok: false, error: `unknown line ${JSON.stringify(line.slice(0, 80))}` };
    // An ACK without its times (a writer built before they were added) has the first three fields.
    const names = kind === 'ACK' && rest.length === 3 ? all.slice(0, 3) : all;
    if (rest.length !== names.length)
      return {
        ok: false,
        error: `${kind} line with ${rest.length} fields, not ${names.length}: ${JSON.stringify(line)}`,
      };
    raw = Object.fromEntries([['kind', kind], ...names.map((n, i) => [n, rest[i]])]);
  }
  const parsed = ackLineSchema.safeParse(raw);
  if (!parsed.success)
    return { ok: false, error: `bad ${kind} line ${JSON.stringify(line)}: ${parsed.error.issues[0]?.message ?? ''}` };
  return { ok: true, value: parsed.data };
}

export interface AckLog {
  lines: AckLine[];
  /** Lines that did not parse, with their line number (1-based). */
  bad: { line: number; error: string }[];
  /** An unterminated last line (QEMU stopped mid-line: never a complete report), if any. */
  partialTail?: string;
}

/** Reads and parses the ACK log. Line ends may be "\n", "\r\n" or "\r\r\n". */
export async function readAckLog(file: string): Promise<AckLog> {
  let text: string;
  try {
    text = await fs.readFile(file, 'latin1');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { lines: [], bad: [] };
    throw err;
  }
  const chunks = text.split('\n');
  const tail = chunks.pop() ?? '';
  const log: AckLog = { lines: [], bad: [] };
  if (tail !== '') log.partialTail = tail;
  chunks.forEach((chunk, i) => {
    const line = chunk.replace(/\r+$/, '');
    if (line === '') return;
    const r = parseAckLine(line);
    if (r.ok) log.lines.push(r.value);
    else log.bad.push({ line: i + 1, error: r.error });
  });
  return log;
}

/** Counts the ACK lines in the log so far (for waiting until the guest writes). */
export async function countAcks(file: string): Promise<number> {
  try {
    const text = await fs.readFile(file, 'latin1');
    let n = 0;
    for (let i = text.indexOf('ACK '); i >= 0; i = text.indexOf('ACK ', i + 4)) n++;
    return n;
  } catch {
    return 0;
  }
}

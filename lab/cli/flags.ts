/** The lab command's flags: its usage text, the zod schema of its flags, and parsing them. */
import { parseArgs } from 'node:util';

import { z } from 'zod';

import { idSchema } from '../../src/domain/input';
import { MAX_DISKS, MAX_VOLUMES } from '../vm';

export const COMMANDS = ['create', 'verify', 'check', 'chain', 'stop', 'start', 'destroy'] as const;
export type Command = (typeof COMMANDS)[number];
const CREATE_ONLY = [
  'disks',
  'volumes',
  'size-mib',
  'layer-data-mib',
  'storage-root',
  'paused',
  'guest-rate',
  'guest-region-mib',
] as const;

export const USAGE = `usage: npx tsx lab/cli.ts <${COMMANDS.join('|')}> --vm-id ID [options]

  create   make the VM's qcow2 chains (with a data pattern per layer) and start it, booting the
           lab guest, which writes records to every disk (with --paused: CPU paused, no guest OS)
  verify   check every disk's chain and data on the running VM (exit 1 on a problem)
  check    a stopped guest VM: every write its guest acknowledged is on its disks (exit 1 if not)
  chain    print every disk's active file and chain, from the running VM
  stop     stop the VM's QEMU (idempotent; a guest is asked to stop first, and powers off)
  start    start a stopped VM again, paused with no guest OS, each disk on the chain below its
           active volume as the image headers give it (--active names another volume)
  destroy  stop it and remove its images and run dir (idempotent)

options:
  --vm-id ID             the VM (letters, digits, - and _)
  --run-dir DIR          run dirs live here (default ./.lab/run)
  --json                 print JSON
verify only:
  --flush                have QEMU flush its caches to the image files first (without it, data
                         QEMU has not yet written back fails, marked "stale on disk")
start only:
  --active DISK=VOLUME   start DISK from VOLUME (repeat per disk; default: the disk's last volume)
create only:
  --disks N              disks (1..${MAX_DISKS}, default 1)
  --volumes K            volumes per disk, base included (1..${MAX_VOLUMES}, default 3)
  --size-mib S           virtual disk size in MiB (default 64)
  --layer-data-mib M     size of each data region in MiB (default 1)
  --storage-root DIR     images live in DIR/images/<diskId>/ (default ./.lab/storage)
  --paused               a paused VM with no guest OS instead of the lab guest (built once by
                         scripts/ensure-guest.sh), which runs by default
  --guest-rate N         the guest's writes per second over all disks (default 0: as fast as it goes)
  --guest-region-mib M   the guest's write region in MiB, after the pattern regions (default: the rest)
`;

export class UsageError extends Error {}

const wholeNumber = (min: number, max: number) =>
  z
    .string()
    .regex(/^\d+$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`));

const flagsSchema = z
  .object({
    'vm-id': idSchema,
    'run-dir': z.string().min(1, 'must not be empty').default('./.lab/run'),
    'storage-root': z.string().min(1, 'must not be empty').default('./.lab/storage'),
    disks: wholeNumber(1, MAX_DISKS).default(1),
    volumes: wholeNumber(1, MAX_VOLUMES).default(3),
    'size-mib': wholeNumber(1, 1024 * 1024).default(64),
    'layer-data-mib': wholeNumber(1, 1024).default(1),
    json: z.boolean().default(false),
    flush: z.boolean().default(false),
    paused: z.boolean().default(false),
    'guest-rate': wholeNumber(0, 1_000_000).optional(),
    'guest-region-mib': wholeNumber(1, 1024 * 1024).optional(),
    active: z
      .array(z.string().regex(/^[A-Za-z0-9_-]+=[A-Za-z0-9_-]+$/, 'must be DISK=VOLUME'))
      .transform((pairs) => Object.fromEntries(pairs.map((p) => p.split('=') as [string, string])))
      .optional(),
  })
  .strict()
  .refine((f) => (f.volumes + 1) * f['layer-data-mib'] <= f['size-mib'], {
    message: 'too small for the data: (volumes + 1) × layer-data-mib must not exceed it',
    path: ['size-mib'],
  });
export type Flags = z.infer<typeof flagsSchema>;

export function parse(argv: string[]): { command: Command; flags: Flags } {
  let values: Record<string, string | string[] | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        'vm-id': { type: 'string' },
        'run-dir': { type: 'string' },
        'storage-root': { type: 'string' },
        disks: { type: 'string' },
        volumes: { type: 'string' },
        'size-mib': { type: 'string' },
        'layer-data-mib': { type: 'string' },
        json: { type: 'boolean' },
        flush: { type: 'boolean' },
        paused: { type: 'boolean' },
        'guest-rate': { type: 'string' },
        'guest-region-mib': { type: 'string' },
        active: { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (positionals.length !== 1 || !(COMMANDS as readonly string[]).includes(positionals[0])) {
    throw new UsageError(
      positionals.length === 0
        ? `a command is needed: ${COMMANDS.join(', ')}`
        : `unknown command ${positionals.join(' ')}; expected one of ${COMMANDS.join(', ')}`,
    );
  }
  const command = positionals[0] as Command;
  if (command !== 'create') {
    const misplaced = CREATE_ONLY.filter((f) => values[f] !== undefined);
    if (misplaced.length > 0)
      throw new UsageError(`${misplaced.map((f) => `--${f}`).join(', ')} only applies to create`);
  }
  if (command !== 'verify' && values.flush !== undefined) throw new UsageError('--flush only applies to verify');
  if (command !== 'start' && values.active !== undefined) throw new UsageError('--active only applies to start');
  if (values.paused && (values['guest-rate'] !== undefined || values['guest-region-mib'] !== undefined))
    throw new UsageError('--guest-rate and --guest-region-mib apply to the guest, not to a --paused VM');
  if (values['vm-id'] === undefined) throw new UsageError('--vm-id is required');
  const { help: _help, ...rest } = values;
  const parsed = flagsSchema.safeParse(rest);
  if (!parsed.success) {
    throw new UsageError(
      parsed.error.issues.map((i) => `${i.path.length ? `--${String(i.path[0])}` : 'flags'}: ${i.message}`).join('; '),
    );
  }
  return { command, flags: parsed.data };
}

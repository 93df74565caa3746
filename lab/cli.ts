/**
 * The lab command: create, inspect and remove lab VMs.
 *
 *   npx tsx lab/cli.ts create  --vm-id X [--disks N] [--volumes K] [--size-mib S] [--layer-data-mib M] [--storage-root DIR]
 *                              [--guest [--guest-rate N] [--guest-region-mib M]]
 *   npx tsx lab/cli.ts verify  --vm-id X [--flush]   (exit 1 when the check fails)
 *   npx tsx lab/cli.ts check   --vm-id X             (a stopped guest VM: exit 1 when an acknowledged write is lost)
 *   npx tsx lab/cli.ts chain   --vm-id X
 *   npx tsx lab/cli.ts stop    --vm-id X
 *   npx tsx lab/cli.ts destroy --vm-id X
 *
 * Every command takes --run-dir DIR (default ./.lab/run) and --json. Exit status: 0 done,
 * 1 failed (or verify found a problem), 2 bad usage.
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { z } from 'zod';

import { idSchema } from '../src/domain/input';
import { volumeIdOf } from '../src/domain/layout';
import { checkGuestWrites, type GuestCheckReport } from './guest';
import {
  activeVolumePath,
  createLabVm,
  destroyLabVm,
  hexPattern,
  type LabVm,
  MAX_DISKS,
  MAX_VOLUMES,
  readHeaderChain,
  readLabVm,
  stopLabVm,
  verifyLabVm,
  type VerifyReport,
} from './vm';

const COMMANDS = ['create', 'verify', 'check', 'chain', 'stop', 'destroy'] as const;
type Command = (typeof COMMANDS)[number];
const CREATE_ONLY = [
  'disks',
  'volumes',
  'size-mib',
  'layer-data-mib',
  'storage-root',
  'guest',
  'guest-rate',
  'guest-region-mib',
] as const;

const USAGE = `usage: npx tsx lab/cli.ts <${COMMANDS.join('|')}> --vm-id ID [options]

  create   make the VM's qcow2 chains (with a data pattern per layer) and start it, paused
           (with --guest: booting the lab guest, which writes records to every disk)
  verify   check every disk's chain and data on the running VM (exit 1 on a problem)
  check    a stopped guest VM: every write its guest acknowledged is on its disks (exit 1 if not)
  chain    print every disk's active file and chain, from the running VM
  stop     stop the VM's QEMU (idempotent; a guest is asked to stop first, and powers off)
  destroy  stop it and remove its images and run dir (idempotent)

options:
  --vm-id ID             the VM (letters, digits, - and _)
  --run-dir DIR          run dirs live here (default ./.lab/run)
  --json                 print JSON
verify only:
  --flush                have QEMU flush its caches to the image files first (without it, data
                         QEMU has not yet written back fails, marked "stale on disk")
create only:
  --disks N              disks (1..${MAX_DISKS}, default 1)
  --volumes K            volumes per disk, base included (1..${MAX_VOLUMES}, default 3)
  --size-mib S           virtual disk size in MiB (default 64)
  --layer-data-mib M     size of each data region in MiB (default 1)
  --storage-root DIR     images live in DIR/images/<diskId>/ (default ./.lab/storage)
  --guest                boot the lab guest (built once by scripts/ensure-guest.sh) instead of a paused VM
  --guest-rate N         the guest's writes per second over all disks (default 0: as fast as it goes)
  --guest-region-mib M   the guest's write region in MiB, after the pattern regions (default: the rest)
`;

class UsageError extends Error {}

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
    guest: z.boolean().default(false),
    'guest-rate': wholeNumber(0, 1_000_000).optional(),
    'guest-region-mib': wholeNumber(1, 1024 * 1024).optional(),
  })
  .strict()
  .refine((f) => (f.volumes + 1) * f['layer-data-mib'] <= f['size-mib'], {
    message: 'too small for the data: (volumes + 1) × layer-data-mib must not exceed it',
    path: ['size-mib'],
  });
type Flags = z.infer<typeof flagsSchema>;

function parse(argv: string[]): { command: Command; flags: Flags } {
  let values: Record<string, string | boolean | undefined>;
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
        guest: { type: 'boolean' },
        'guest-rate': { type: 'string' },
        'guest-region-mib': { type: 'string' },
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
  if (!values.guest && (values['guest-rate'] !== undefined || values['guest-region-mib'] !== undefined))
    throw new UsageError('--guest-rate and --guest-region-mib need --guest');
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

const MiB = 1024 * 1024;
const mib = (bytes: number): string => `${bytes / MiB} MiB`;

function describeVm(vm: LabVm): string {
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

function describeReport(report: VerifyReport): string {
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

function describeGuestReport(report: GuestCheckReport): string {
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

async function main(argv: string[]): Promise<number> {
  const { command, flags } = parse(argv);
  const vmId = flags['vm-id'];
  const runDir = flags['run-dir'];
  const print = (json: unknown, human: string): void => {
    process.stdout.write(`${flags.json ? JSON.stringify(json, null, 2) : human}\n`);
  };
  switch (command) {
    case 'create': {
      const vm = await createLabVm({
        vmId,
        runDir,
        storageRoot: flags['storage-root'],
        disks: flags.disks,
        volumes: flags.volumes,
        sizeMiB: flags['size-mib'],
        layerDataMiB: flags['layer-data-mib'],
        ...(flags.guest
          ? {
              guest: {
                ...(flags['guest-rate'] === undefined ? {} : { rate: flags['guest-rate'] }),
                ...(flags['guest-region-mib'] === undefined ? {} : { regionMiB: flags['guest-region-mib'] }),
              },
            }
          : {}),
      });
      print(vm, `created ${describeVm(vm)}`);
      return 0;
    }
    case 'verify': {
      const report = await verifyLabVm(runDir, vmId, { flush: flags.flush });
      print(report, describeReport(report));
      return report.ok ? 0 : 1;
    }
    case 'check': {
      const report = await checkGuestWrites(runDir, vmId);
      print(report, describeGuestReport(report));
      return report.ok ? 0 : 1;
    }
    case 'chain': {
      const vm = await readLabVm(runDir, vmId);
      const disks = [];
      for (const d of vm.disks) {
        const activePath = await activeVolumePath(runDir, vmId, d.deviceId);
        const paths = await readHeaderChain(activePath);
        disks.push({
          diskId: d.diskId,
          activePath,
          chain: paths.map((p) => volumeIdOf(vm.storageRoot, d.diskId, p) ?? p),
          paths,
        });
      }
      print(
        { vmId, disks },
        disks.map((d) => `${d.diskId}: ${d.chain.join(' → ')}   (active: ${d.activePath})`).join('\n'),
      );
      return 0;
    }
    case 'stop': {
      const how = await stopLabVm(runDir, vmId);
      const said = { 'not-running': 'was not running', 'guest-powered-off': 'its guest powered off', killed: 'killed' };
      print({ vmId, stopped: true, how }, `stopped lab VM ${vmId} (${said[how]})`);
      return 0;
    }
    case 'destroy':
      await destroyLabVm(runDir, vmId);
      print({ vmId, destroyed: true }, `destroyed lab VM ${vmId}`);
      return 0;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`lab: ${err.message}\n\n${USAGE}`);
      process.exit(2);
    }
    process.stderr.write(`lab: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);

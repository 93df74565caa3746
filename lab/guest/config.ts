/**
 * A lab VM's guest: the options `createLabVm({ guest })` takes, what the manifest records of it,
 * the kernel command line that carries the writer's parameters, and the files under the VM's run dir.
 */
import * as path from 'node:path';

import { z } from 'zod';

export const MiB = 1024 * 1024;
/** Files of a guest VM, in its run dir `<runDir>/<vmId>/`. */
export const GUEST_ACK_LOG = 'guest-acks.log';
export const GUEST_CONSOLE_LOG = 'guest-console.log';
export const GUEST_CONSOLE_SOCKET = 'console.sock';

/** What a caller may set; everything has a default. */
export const labGuestOptionsSchema = z
  .object({
    /** Writes per second over all disks; 0 (the default) = as fast as the guest goes (about 1000/s here). */
    rate: z.number().int().min(0).max(1_000_000).default(0),
    /** Record size in bytes: a multiple of 512 in 512..65536 (default 4096). */
    recordSize: z
      .number()
      .int()
      .min(512)
      .max(65536)
      .refine((n) => n % 512 === 0, 'must be a multiple of 512')
      .default(4096),
    /** Start of the write region in MiB; default: right after the lab's pattern regions. */
    regionOffsetMiB: z.number().int().min(0).optional(),
    /** Length of the write region in MiB; default: the rest of the disk. */
    regionMiB: z.number().int().min(1).optional(),
    memoryMiB: z.number().int().min(128).max(4096).default(256),
    /** The run's nonce (16 hex digits), written into every record; default: random. */
    nonce: z
      .string()
      .regex(/^[0-9a-f]{16}$/, 'must be 16 lowercase hex digits')
      .optional(),
  })
  .strict();
export type LabGuestOptions = z.input<typeof labGuestOptionsSchema>;

/** The guest as the manifest records it (absolute paths; offsets and lengths in bytes). */
export const labGuestSchema = z
  .object({
    nonce: z.string().regex(/^[0-9a-f]{16}$/),
    rate: z.number().int().min(0),
    recordSize: z.number().int().min(512),
    regionOffset: z.number().int().min(0),
    regionLength: z.number().int().min(1),
    memoryMiB: z.number().int().min(128),
    /** The cached build it boots (scripts/ensure-guest.sh). */
    kernel: z.string().min(1),
    initrd: z.string().min(1),
    /** QEMU writes the second serial port (the writer's ACK lines) here. */
    ackLog: z.string().min(1),
    /** The first serial port (console): a unix socket (stop requests go in) logged to `consoleLog`. */
    consoleSocket: z.string().min(1),
    consoleLog: z.string().min(1),
  })
  .strict();
export type LabGuest = z.infer<typeof labGuestSchema>;

/** The kernel command line: the writer reads its `lmw.*` parameters from /proc/cmdline. */
export function guestKernelCmdline(g: LabGuest, disks: number): string {
  return [
    'console=ttyS0',
    'quiet',
    // Anything going wrong in the guest ends QEMU (with -no-reboot) instead of hanging it.
    'panic=-1',
    `lmw.nonce=${g.nonce}`,
    `lmw.disks=${disks}`,
    `lmw.off=${g.regionOffset}`,
    `lmw.len=${g.regionLength}`,
    `lmw.rec=${g.recordSize}`,
    `lmw.rate=${g.rate}`,
  ].join(' ');
}

/**
 * Resolves the options against the disk's layout: the region must lie on the disk, after the lab's
 * pattern regions (which end at `patternEndMiB`), in whole records.
 */
export function resolveGuest(
  options: z.output<typeof labGuestOptionsSchema>,
  layout: { sizeMiB: number; patternEndMiB: number; vmDir: string; kernel: string; initrd: string; nonce: string },
): LabGuest {
  const offMiB = options.regionOffsetMiB ?? layout.patternEndMiB;
  const lenMiB = options.regionMiB ?? layout.sizeMiB - offMiB;
  if (offMiB < layout.patternEndMiB)
    throw new Error(
      `guest.regionOffsetMiB ${offMiB} overlaps the lab's pattern regions, which end at ${layout.patternEndMiB} MiB`,
    );
  if (lenMiB < 1 || offMiB + lenMiB > layout.sizeMiB)
    throw new Error(
      `the guest's write region [${offMiB}, ${offMiB + lenMiB}) MiB does not fit the ${layout.sizeMiB} MiB disk`,
    );
  // A record size like 1536 does not divide a MiB.
  if ((offMiB * MiB) % options.recordSize !== 0 || (lenMiB * MiB) % options.recordSize !== 0)
    throw new Error(`the guest's write region must be a whole number of ${options.recordSize}-byte records`);
  return {
    nonce: options.nonce ?? layout.nonce,
    rate: options.rate,
    recordSize: options.recordSize,
    regionOffset: offMiB * MiB,
    regionLength: lenMiB * MiB,
    memoryMiB: options.memoryMiB,
    kernel: layout.kernel,
    initrd: layout.initrd,
    ackLog: path.join(layout.vmDir, GUEST_ACK_LOG),
    consoleSocket: path.join(layout.vmDir, GUEST_CONSOLE_SOCKET),
    consoleLog: path.join(layout.vmDir, GUEST_CONSOLE_LOG),
  };
}

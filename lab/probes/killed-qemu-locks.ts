/**
 * How long a SIGKILLed QEMU's image locks outlive its QMP socket: the measurement behind the
 * guard's wait for a stopped VM's locks (src/activities/volume-guard.ts). Each round boots a lab VM
 * whose guest writes, kills its QEMU, and polls the socket, the process state, its fds and the
 * locks on its volumes (/proc/locks) until the socket refuses and the locks are gone. Prints each
 * round's timeline and writes them to test-artifacts/killed-qemu-locks.json.
 *
 *   npx tsx lab/probes/killed-qemu-locks.ts [--rounds 6] [--cache none|writeback]
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import { z } from 'zod';

import { volumePath } from '../../src/domain/layout';
import { waitForGuestAcks } from '../guest';
import { createLabVm, destroyLabVm } from '../vm';
import { procStatFields } from '../vm/proc-stat';
import { canConnect } from '../vm/processes';

const argsSchema = z.object({
  rounds: z.coerce.number().int().min(1).max(100),
  cache: z.enum(['none', 'writeback']),
});

function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** Lines of /proc/locks on any of `inodes` (inode numbers as the kernel prints them). */
function locksOn(inodes: Set<string>): number {
  return readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .filter((l) => inodes.has(/\S+:\S+:(\d+)\s/.exec(l)?.[1] ?? '')).length;
}

interface Round {
  round: number;
  /** Each change of what is seen, in ms from the kill. */
  timeline: string[];
  socketRefusedMs: number;
  locksGoneMs: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { rounds: { type: 'string', default: '6' }, cache: { type: 'string', default: 'none' } },
  });
  const args = argsSchema.parse(values);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'lm-lock-probe-'));
  const rounds: Round[] = [];
  try {
    for (let round = 0; round < args.rounds; round++) {
      const vmId = `probe-${round}`;
      const vm = await createLabVm({
        storageRoot: path.join(dir, 'storage'),
        runDir: path.join(dir, 'run'),
        vmId,
        idPrefix: `r${round}-`,
        disks: 2,
        volumes: 3,
        layerDataMiB: 4,
        sizeMiB: 20,
        cache: args.cache,
        guest: { rate: 200, regionMiB: 4 },
      });
      try {
        await waitForGuestAcks(vm.guest!.ackLog, 40);
        const inodes = new Set(
          vm.disks.flatMap((d) =>
            d.volumeIds.map((v) => String(statSync(volumePath(path.join(dir, 'storage'), d.diskId, v)).ino)),
          ),
        );
        const t0 = performance.now();
        process.kill(vm.pid, 'SIGKILL');
        const timeline: string[] = [];
        let seen = '';
        let socketRefusedMs = -1;
        for (;;) {
          const accepts = await canConnect(vm.qmpSocket);
          const locks = locksOn(inodes);
          const t = performance.now() - t0;
          if (!accepts && socketRefusedMs < 0) socketRefusedMs = t;
          const now = `socket ${accepts ? 'accepts' : 'refuses'}, state ${procStatFields(vm.pid)?.[0] ?? 'gone'}, ${openFds(vm.pid)} fds, ${locks} locks`;
          if (now !== seen) timeline.push(`${t.toFixed(2)} ms: ${now}`);
          seen = now;
          if (!accepts && locks === 0) {
            rounds.push({ round, timeline, socketRefusedMs, locksGoneMs: t });
            break;
          }
          if (t > 10_000) throw new Error(`round ${round}: locks still there 10 s after the kill`);
        }
      } finally {
        await destroyLabVm(path.join(dir, 'run'), vmId).catch(() => undefined);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  for (const r of rounds) console.log(`round ${r.round} (cache=${args.cache}):\n  ${r.timeline.join('\n  ')}`);
  const outlived = rounds.filter((r) => r.locksGoneMs > r.socketRefusedMs + 0.5);
  const longest = Math.max(...rounds.map((r) => r.locksGoneMs - r.socketRefusedMs));
  console.log(
    `locks outlived the socket in ${outlived.length} of ${rounds.length} rounds, by at most ${longest.toFixed(2)} ms`,
  );
  const out = path.resolve(__dirname, '../../test-artifacts/killed-qemu-locks.json');
  mkdirSync(path.dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify({ cache: args.cache, rounds }, null, 2)}\n`);
  console.log(`written to ${out}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

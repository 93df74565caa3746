/**
 * QEMU as the oracle of what an image uses (test/qemu/guard-vs-qemu.test.ts): whether a reader of
 * QEMU's opens the image with the volume there and fails to without it, beside the guard's answer.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { promisify } from 'node:util';

import { VolumeUsage, type VolumeUser } from '../../src/volume-users';

const run = promisify(execFile);

/**
 * Which of QEMU's readers open `image`, from `cwd`: `qemu-img info --backing-chain` and a `qemu-io`
 * read (which also opens the data file). They differ: qemu-img refuses a json: backing name that
 * holds an explicit `backing`, which qemu-io (and a VM) open.
 */
export async function qemuOpens(image: string, cwd: string): Promise<boolean[]> {
  const opens = (cmd: string, args: string[]): Promise<boolean> =>
    run(cmd, args, { cwd }).then(
      () => true,
      () => false,
    );
  return Promise.all([
    opens('qemu-img', ['info', '-U', '--backing-chain', '--output=json', image]),
    opens('qemu-io', ['-r', '-U', '-c', 'read 0 512', image]),
  ]);
}

/** Whether a reader of QEMU's opens the image with `volume` there, and fails without it. */
export async function qemuUsesVolume(image: string, volume: string, cwd: string): Promise<boolean> {
  const before = await qemuOpens(image, cwd);
  fs.renameSync(volume, `${volume}.away`);
  try {
    const after = await qemuOpens(image, cwd);
    return before.some((opened, i) => opened && !after[i]);
  } finally {
    fs.renameSync(`${volume}.away`, volume);
  }
}

export type Answer = 'user' | 'refused' | 'none';

/** The guard's answer for `image` among the users it found of a volume. */
export function answerFor(image: string, users: VolumeUser[]): Answer {
  const mine = users.filter((u) => ('image' in u ? u.image : 'path' in u ? u.path : '') === image);
  if (mine.some((u) => u.kind === 'unresolvedName' || u.kind === 'unreadable')) return 'refused';
  return mine.some((u) => u.kind === 'backingOf' || u.kind === 'dataFileOf') ? 'user' : 'none';
}

/** The guard's answer and QEMU's, for `image` and `volume` under `root`. */
export async function bothAnswers(
  root: string,
  volume: string,
  image: string,
  cwd: string,
): Promise<{ answer: Answer; qemuUsesVolume: boolean }> {
  const guard = new VolumeUsage(root);
  try {
    const { users } = await guard.findUsers({ volume });
    return { answer: answerFor(image, users), qemuUsesVolume: await qemuUsesVolume(image, volume, cwd) };
  } finally {
    guard.close();
  }
}

// Run as a script (in a mount namespace of a test's own): prints both answers as JSON.
if (require.main === module) {
  const [root, volume, image, cwd] = process.argv.slice(2);
  void bothAnswers(root, volume, image, cwd).then((a) => process.stdout.write(JSON.stringify(a)));
}

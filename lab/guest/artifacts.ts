/** The guest's build (kernel and initramfs), from scripts/ensure-guest.sh's cache. */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { runOk } from '../vm/processes';

const REPO = path.resolve(__dirname, '..', '..');

export interface GuestArtifacts {
  /** `~/.cache/live-merge/guest-<hash>/` */
  dir: string;
  kernel: string;
  initrd: string;
}

let cached: Promise<GuestArtifacts> | undefined;

/**
 * Runs scripts/ensure-guest.sh once per process (it builds the guest the first time on this
 * machine, about 10 s, and later only prints the cached directory) and returns the files to boot.
 */
export function ensureGuestArtifacts(): Promise<GuestArtifacts> {
  cached ??= (async () => {
    const r = await runOk('bash', [path.join(REPO, 'scripts', 'ensure-guest.sh')]);
    const dir = r.stdout.trim().split('\n').pop() ?? '';
    const artifacts = { dir, kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initramfs.cpio') };
    for (const f of [artifacts.kernel, artifacts.initrd]) await fs.access(f);
    return artifacts;
  })();
  void cached.catch(() => (cached = undefined));
  return cached;
}

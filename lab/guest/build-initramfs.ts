/**
 * Packs a staged guest root into the initramfs (newc cpio), adding the one node a staged tree
 * cannot hold without root: /dev/console (the kernel opens it for init before anything mounts
 * devtmpfs). Run by scripts/ensure-guest.sh:
 *
 *   npx tsx lab/guest/build-initramfs.ts <staged root dir> <output file>
 */
import * as fs from 'node:fs/promises';

import { buildCpio, type CpioEntry, entriesOfTree } from './initramfs';

async function main(argv: string[]): Promise<void> {
  if (argv.length !== 2) throw new Error('usage: build-initramfs.ts <root dir> <output file>');
  const [root, out] = argv;
  const tree = (await entriesOfTree(root)).filter((e) => !e.name.startsWith('dev/'));
  const entries: CpioEntry[] = [
    ...tree.filter((e) => e.name !== 'dev'),
    { kind: 'dir', name: 'dev', perm: 0o755 },
    { kind: 'chardev', name: 'dev/console', perm: 0o600, major: 5, minor: 1 },
  ];
  const archive = buildCpio(entries);
  await fs.writeFile(`${out}.tmp`, archive);
  await fs.rename(`${out}.tmp`, out);
  process.stdout.write(`${out}: ${entries.length} entries, ${archive.length} bytes\n`);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`build-initramfs: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

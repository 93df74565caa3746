import { promises as fs } from 'node:fs';
import * as path from 'node:path';

/**
 * A `virsh` on PATH that answers from files, for the libvirt driver's unit tests: `dumpxml` prints
 * `domain.xml` (the live XML), `dumpxml --inactive ...` prints `inactive.xml` when present (else
 * `domain.xml`), `domstate` prints `domstate` (`running` when absent), `define FILE` copies FILE with its mode to
 * `inactive.xml` and then, once, moves `domstate-after-define` (when present) to `domstate`: a
 * domain that starts meanwhile. `blockjob DOM TARGET --info` prints `info-TARGET` (nothing when
 * absent: no job), `event` prints `events` and waits; a command with a `fail-COMMAND` file prints it
 * to stderr and fails. Every call's arguments after `-q -c URI` are appended to `calls`, one line each.
 */
const SCRIPT = `#!/bin/sh
state="$FAKE_VIRSH_STATE"
shift 3
printf '%s\\n' "$*" >> "$state/calls"
if [ -f "$state/fail-$1" ]; then cat "$state/fail-$1" >&2; exit 1; fi
case "$1" in
  dumpxml) if [ "$2" = "--inactive" ] && [ -f "$state/inactive.xml" ]; then cat "$state/inactive.xml"; else cat "$state/domain.xml"; fi ;;
  domstate) if [ -f "$state/domstate" ]; then cat "$state/domstate"; else echo running; fi ;;
  define) cp -p "$2" "$state/inactive.xml" && if [ -f "$state/domstate-after-define" ]; then mv "$state/domstate-after-define" "$state/domstate"; fi ;;
  blockjob) if [ "$4" = "--info" ] && [ -f "$state/info-$3" ]; then cat "$state/info-$3"; fi ;;
  event) cat "$state/events" 2>/dev/null; exec sleep 60 ;;
esac
`;

export interface FakeVirsh {
  /** Sets what a command prints (`domain.xml`, `domstate`, `info-vda`, `events`) or its failure (`fail-blockcommit`). */
  answer(file: string, text: string): Promise<void>;
  forget(file: string): Promise<void>;
  /** The path of one of those files, e.g. `inactive.xml` after a `define`. */
  file(name: string): string;
  /** The calls so far, each as its arguments joined by spaces; then forgets them. */
  calls(): Promise<string[]>;
  /** Restores PATH. */
  restore(): void;
}

export async function installFakeVirsh(dir: string): Promise<FakeVirsh> {
  const bin = path.join(dir, 'bin');
  const state = path.join(dir, 'virsh-state');
  await fs.mkdir(bin, { recursive: true });
  await fs.mkdir(state, { recursive: true });
  await fs.writeFile(path.join(bin, 'virsh'), SCRIPT, { mode: 0o755 });
  const saved = { PATH: process.env.PATH, FAKE_VIRSH_STATE: process.env.FAKE_VIRSH_STATE };
  process.env.PATH = `${bin}:${process.env.PATH ?? ''}`;
  process.env.FAKE_VIRSH_STATE = state;
  return {
    answer: (file, text) => fs.writeFile(path.join(state, file), text),
    forget: (file) => fs.rm(path.join(state, file), { force: true }),
    file: (name) => path.join(state, name),
    async calls() {
      const text = await fs.readFile(path.join(state, 'calls'), 'utf8').catch(() => '');
      await fs.rm(path.join(state, 'calls'), { force: true });
      return text.split('\n').filter(Boolean);
    },
    restore() {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    },
  };
}

import type { ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import * as path from 'node:path';

/**
 * Appends a child's stdout and stderr to one log file, closed once both have closed. Piping both
 * with pipe's default `end: true` closed the file at the first one's end, and the other's last
 * output then failed the test process with "write after end".
 */
export function logChildOutput(child: ChildProcess, logFile: string): void {
  mkdirSync(path.dirname(logFile), { recursive: true });
  const log = createWriteStream(logFile, { flags: 'a' });
  const outputs = [child.stdout, child.stderr].filter((s) => s !== null);
  let open = outputs.length;
  if (open === 0) log.end();
  for (const output of outputs) {
    output.pipe(log, { end: false });
    output.once('close', () => {
      if (--open === 0) log.end();
    });
  }
}

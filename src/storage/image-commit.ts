// Stryker disable all: process plumbing; what is committed, rebased or skipped is decided in activities/offline-*.ts and activities/pivot-outcome.ts
import { spawn } from 'node:child_process';

/**
 * `qemu-img commit` and `qemu-img rebase -u` on a stopped VM's chain. Each holds QEMU's image
 * locks while it writes, so a VM start meanwhile fails on them. They run under
 * `setpriv --pdeathsig TERM`: a host agent that dies takes its qemu-img with it, and the retry on
 * the restarted agent does not find the images locked by an orphan.
 */

export class ImageToolError extends Error {
  override name = 'ImageToolError';
  constructor(
    readonly args: readonly string[],
    readonly code: number | null,
    readonly stderr: string,
  ) {
    super(`qemu-img ${args.join(' ')} failed (${code === null ? 'killed' : `exit ${code}`}): ${stderr.trim()}`);
  }
}

/** True when qemu-img failed on an image lock: another process (a VM) holds the image. */
export function isLockConflict(err: unknown): boolean {
  return err instanceof ImageToolError && /Failed to get (shared )?"\w+" lock/.test(err.stderr);
}

export interface ImageCommit {
  top: string;
  base: string;
  /** Bytes per second; 0 is unlimited. */
  bytesPerSec: number;
  /** Fraction done, 0 to 1, as qemu-img's `-p` prints it. */
  onProgress?: (fraction: number) => void;
  /** Abort kills qemu-img (SIGTERM): the top stays intact (`-d`), the chain stays readable. */
  signal?: AbortSignal;
}

/** Commits `top` into `base` and keeps the top's data (`-d`): running it again writes the same data. */
export async function commitImage(c: ImageCommit): Promise<void> {
  const args = ['commit', '-f', 'qcow2', '-d', '-p', '-b', c.base];
  if (c.bytesPerSec > 0) args.push('-r', String(c.bytesPerSec));
  args.push(c.top);
  await runQemuImg(args, c.signal, (text) => {
    for (const m of text.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)) c.onProgress?.(Number(m[1]) / 100);
  });
}

/** Makes `image` name `backingName` (as written, relative to its directory) as its qcow2 backing; data untouched. */
export async function rebaseUnsafe(image: string, backingName: string, signal?: AbortSignal): Promise<void> {
  await runQemuImg(['rebase', '-f', 'qcow2', '-u', '-b', backingName, '-F', 'qcow2', image], signal);
}

/**
 * Whether `a` and `b`, each read through its own backing chain, show a guest the same data
 * (`qemu-img compare`; a size difference counts only where the larger holds data).
 */
export async function sameGuestData(a: string, b: string): Promise<boolean> {
  const args = ['compare', '-f', 'qcow2', '-F', 'qcow2', a, b];
  const code = await runQemuImg(args, undefined, undefined, [0, 1]);
  return code === 0;
}

function runQemuImg(
  args: string[],
  signal?: AbortSignal,
  onStdout?: (text: string) => void,
  answers: readonly number[] = [0],
): Promise<number> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
    const child = spawn('setpriv', ['--pdeathsig', 'TERM', '--', 'qemu-img', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => onStdout?.(text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => {
      stderr = (stderr + text).slice(-8192);
    });
    const abort = (): void => {
      child.kill('SIGTERM');
    };
    signal?.addEventListener('abort', abort, { once: true });
    child.on('error', (err) => {
      signal?.removeEventListener('abort', abort);
      reject(err);
    });
    child.on('close', (code) => {
      signal?.removeEventListener('abort', abort);
      if (signal?.aborted) return reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      if (code !== null && answers.includes(code)) return resolve(code);
      reject(new ImageToolError(args, code, stderr));
    });
  });
}

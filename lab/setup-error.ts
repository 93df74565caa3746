/**
 * Set-up failures of the lab's commands (make cluster, make demo): what failed and what to do, in
 * one line, instead of a Node stack trace. `LIVE_MERGE_DEBUG=1` prints the stack trace as well.
 * Any other error is a bug and prints its stack trace as it always did.
 */

/** A failure of the machine's set-up, not of the code: its message says what failed and what to do. */
export class SetupError extends Error {
  override readonly name = 'SetupError';
}

const DEBUG_HINT = 'LIVE_MERGE_DEBUG=1 shows the stack trace';

/** The last non-empty line a failed command wrote on stderr (or its message's), for a one-line report. */
export function lastLine(err: unknown): string {
  const e = err as { stderr?: unknown; message?: unknown };
  const text = typeof e?.stderr === 'string' && e.stderr.trim() ? e.stderr : String(e?.message ?? err);
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  return lines[lines.length - 1] ?? '';
}

/**
 * The set-up failure `err` stands for, when it is one: a SetupError, a program that is not
 * installed (spawn ENOENT) or an address in use (EADDRINUSE); undefined for anything else.
 */
export function asSetupError(err: unknown): SetupError | undefined {
  if (err instanceof SetupError) return err;
  const e = err as { code?: unknown; syscall?: unknown; path?: unknown; address?: unknown; port?: unknown };
  if (e?.code === 'ENOENT' && typeof e.syscall === 'string' && e.syscall.startsWith('spawn')) {
    return new SetupError(`${String(e.path)} is not installed (or not on PATH): run make setup`, { cause: err });
  }
  if (e?.code === 'EADDRINUSE') {
    const where = e.port === undefined ? String(e.address) : `${String(e.address)}:${String(e.port)}`;
    return new SetupError(`${where} is in use: stop what listens there, or run again`, { cause: err });
  }
  return undefined;
}

/** The one line a command prints for a failure: a set-up failure as `<prefix>: <message>`, a bug as its stack. */
export function reportFailure(prefix: string, err: unknown): void {
  const setup = asSetupError(err);
  if (!setup) {
    console.error(`${prefix}:`, err);
    return;
  }
  console.error(`${prefix}: ${setup.message} (${DEBUG_HINT})`);
  if (process.env.LIVE_MERGE_DEBUG === '1') console.error(setup); // with its cause, when it has one
}

/**
 * Typed errors raised by the QMP client (src/drivers/qmp/client.ts).
 *
 * Failure model:
 * - error reply → that command rejects with QmpCommandError; the connection stays usable.
 * - command timeout → that command rejects with QmpTimeoutError; the connection stays usable and a
 *   late reply is dropped. QEMU may still be executing (or have executed) the command.
 * - a line that is not JSON, or a message failing the wire schema, means the stream can no longer
 *   be trusted: the connection is torn down, pending commands/waits reject with that
 *   QmpProtocolError and onClose listeners receive it.
 * - the peer closing (or a socket error) rejects everything pending with QmpClosedError.
 *
 * Every error extends QmpError, so callers can catch "anything QMP" with one instanceof check and
 * then narrow. Each class sets `this.name` explicitly (not from the constructor name) so the name
 * survives bundling/minification and Temporal's failure conversion (which keys on `name`).
 */

export class QmpError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'QmpError';
  }
}

/** QEMU answered a command with `{"error": {"class", "desc"}}`. */
export class QmpCommandError extends QmpError {
  /** The QMP command that failed, e.g. `block-commit`. */
  readonly command: string;
  /** QMP error class, e.g. `GenericError`, `DeviceNotFound`, `CommandNotFound`, `DeviceNotActive`. */
  readonly errorClass: string;
  /** QEMU's human-readable description, e.g. `Job not found`. */
  readonly desc: string;

  constructor(command: string, errorClass: string, desc: string) {
    super(`QMP command '${command}' failed: ${errorClass}: ${desc}`);
    this.name = 'QmpCommandError';
    this.command = command;
    this.errorClass = errorClass;
    this.desc = desc;
  }
}

/** The QMP socket could not be connected to (missing path, nobody listening, permission...). */
export class QmpConnectError extends QmpError {
  readonly socketPath: string;
  /** errno code from the socket, e.g. `ENOENT` (no socket file), `ECONNREFUSED` (stale file). */
  readonly code: string | undefined;

  constructor(socketPath: string, code: string | undefined, options?: { cause?: unknown }) {
    super(`cannot connect to QMP socket ${socketPath}: ${code ?? 'unknown error'}`, options);
    this.name = 'QmpConnectError';
    this.socketPath = socketPath;
    this.code = code;
  }
}

/** The connection closed while a command/wait was pending, or a call was made after close. */
export class QmpClosedError extends QmpError {
  constructor(message = 'QMP connection closed', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'QmpClosedError';
  }
}

/**
 * The peer sent something that is not valid QMP: a line that is not JSON, a message that fails
 * the wire schema, or (from executeParsed) a `return` value that fails the caller's schema.
 */
export class QmpProtocolError extends QmpError {
  /** The command whose reply failed to parse, when known. */
  readonly command: string | undefined;
  /** The offending raw line (truncated), when known. */
  readonly raw: string | undefined;

  constructor(message: string, details?: { command?: string; raw?: string; cause?: unknown }) {
    super(message, details?.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'QmpProtocolError';
    this.command = details?.command;
    this.raw = details?.raw === undefined ? undefined : truncate(details.raw, 500);
  }
}

/** A command, the connect handshake, or waitForEvent did not finish in time. */
export class QmpTimeoutError extends QmpError {
  /** What timed out: a command name, `connect`, or `waitForEvent`. */
  readonly operation: string;
  readonly timeoutMs: number;

  constructor(operation: string, timeoutMs: number) {
    super(`QMP ${operation} timed out after ${timeoutMs} ms`);
    this.name = 'QmpTimeoutError';
    this.operation = operation;
    this.timeoutMs = timeoutMs;
  }
}

function truncate(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max)}…(${s.length} chars)`;
}

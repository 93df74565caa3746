/**
 * Minimal QMP (QEMU Machine Protocol) client over a unix socket, using node:net only.
 *
 * Wire format: newline-delimited JSON (QEMU's default, non-pretty monitor output). On connect QEMU
 * sends a greeting; the client must send `qmp_capabilities` before any other command and before
 * QEMU emits events. Each command we send carries a unique string `id`; replies are matched by id,
 * so several commands may be in flight (QEMU itself executes in-band commands one at a time, in
 * order).
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
 * Note: a QEMU `-qmp unix:...,server=on` chardev serves ONE client at a time. A second connect
 * succeeds at the socket level but gets no greeting until the first client disconnects, so
 * connect() then ends in QmpTimeoutError.
 */
import * as net from 'node:net';
import { z } from 'zod';
import {
  QmpClosedError,
  QmpCommandError,
  QmpConnectError,
  QmpError,
  QmpProtocolError,
  QmpTimeoutError,
} from './errors';
import {
  errorReplySchema,
  eventSchema,
  greetingSchema,
  successReplySchema,
  type QmpEvent,
  type QmpGreeting,
} from './schemas';

export type { QmpEvent, QmpGreeting } from './schemas';

export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;
/** Refuse to buffer a single line beyond this (garbage on the socket, not real QMP). */
const MAX_LINE_CHARS = 256 * 1024 * 1024;

export interface QmpConnectOptions {
  /** Deadline for socket connect + greeting + qmp_capabilities. Default 30 s. */
  timeoutMs?: number;
}

export interface QmpExecuteOptions {
  /** Default 30 s. */
  timeoutMs?: number;
}

interface PendingCommand {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type CloseListener = (err?: Error) => void;
type EventListener = (event: QmpEvent) => void;

export class QmpClient {
  /** The greeting QEMU sent (version, capabilities). */
  readonly greeting: QmpGreeting;
  readonly socketPath: string;

  private readonly socket: net.Socket;
  private readonly pending = new Map<string, PendingCommand>();
  private readonly eventListeners = new Set<EventListener>();
  private readonly closeListeners = new Set<CloseListener>();
  private nextId = 1;
  private isClosed = false;
  /** Why the connection closed: undefined for a client-initiated close(). */
  private closeReason: Error | undefined;
  private socketClosed: Promise<void>;

  private constructor(socket: net.Socket, socketPath: string, greeting: QmpGreeting) {
    this.socket = socket;
    this.socketPath = socketPath;
    this.greeting = greeting;
    this.socketClosed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /**
   * Connect to a QMP unix socket, validate the greeting and negotiate capabilities.
   * Rejects with QmpConnectError (ENOENT, ECONNREFUSED, ...), QmpProtocolError (bad greeting),
   * QmpCommandError (qmp_capabilities refused) or QmpTimeoutError.
   */
  static async connect(socketPath: string, opts: QmpConnectOptions = {}): Promise<QmpClient> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const socket = net.createConnection({ path: socketPath });
    socket.setEncoding('utf8'); // StringDecoder: multi-byte characters split across chunks are safe

    let client: QmpClient;
    try {
      const { greeting, leftover } = await readGreeting(socket, socketPath, timeoutMs);
      client = new QmpClient(socket, socketPath, greeting);
      client.attach(leftover);
    } catch (err) {
      socket.destroy();
      throw err;
    }
    try {
      await client.execute('qmp_capabilities', undefined, {
        timeoutMs: Math.max(1, deadline - Date.now()),
      });
    } catch (err) {
      const reason = err instanceof QmpTimeoutError ? new QmpTimeoutError('connect', timeoutMs) : err;
      client.teardown(reason instanceof Error ? reason : new QmpError(String(reason)));
      throw reason;
    }
    return client;
  }

  /** True once the connection is closed (by close(), by the peer, or after a protocol error). */
  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Run a QMP command and resolve with its `return` value (unvalidated).
   * Rejects with QmpCommandError (error reply), QmpTimeoutError, QmpClosedError, QmpProtocolError.
   */
  execute(
    command: string,
    args?: Record<string, unknown>,
    opts: QmpExecuteOptions = {},
  ): Promise<unknown> {
    if (this.isClosed) {
      return Promise.reject(
        new QmpClosedError(`QMP connection closed; cannot run '${command}'`, { cause: this.closeReason }),
      );
    }
    const id = `lm-${this.nextId++}`;
    const message: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) message.arguments = args;
    let line: string;
    try {
      line = `${JSON.stringify(message)}\n`;
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    const timeoutMs = opts.timeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS;
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new QmpTimeoutError(command, timeoutMs));
      }, timeoutMs);
      this.pending.set(id, { command, resolve, reject, timer });
      this.socket.write(line);
    });
  }

  /**
   * Run a command and validate its `return` value with `schema`. A mismatch rejects with a
   * QmpProtocolError naming the command (the connection stays usable).
   */
  async executeParsed<S extends z.ZodType>(
    command: string,
    args: Record<string, unknown> | undefined,
    schema: S,
    opts: QmpExecuteOptions = {},
  ): Promise<z.infer<S>> {
    const value = await this.execute(command, args, opts);
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      throw new QmpProtocolError(
        `reply to QMP command '${command}' does not match the expected schema: ${z.prettifyError(parsed.error)}`,
        { command, raw: safeStringify(value), cause: parsed.error },
      );
    }
    return parsed.data;
  }

  /** Subscribe to all QMP events. Returns an unsubscribe function. Listener exceptions are ignored. */
  onEvent(listener: EventListener): () => void {
    this.eventListeners.add(listener);
    return () => {
      this.eventListeners.delete(listener);
    };
  }

  /**
   * Resolve with the first event (received after this call) that satisfies `predicate`.
   * Subscribe BEFORE executing the command that triggers the event, or it may be missed.
   * Rejects with QmpTimeoutError, QmpClosedError, or whatever `predicate` throws.
   */
  waitForEvent(predicate: (event: QmpEvent) => boolean, timeoutMs: number): Promise<QmpEvent> {
    if (this.isClosed) {
      return Promise.reject(new QmpClosedError('QMP connection closed; cannot wait for events', { cause: this.closeReason }));
    }
    return new Promise<QmpEvent>((resolve, reject) => {
      const finish = (fn: () => void): void => {
        clearTimeout(timer);
        unsubscribeEvent();
        unsubscribeClose();
        fn();
      };
      const timer = setTimeout(() => finish(() => reject(new QmpTimeoutError('waitForEvent', timeoutMs))), timeoutMs);
      const unsubscribeEvent = this.onEvent((event) => {
        let matched: boolean;
        try {
          matched = predicate(event);
        } catch (err) {
          finish(() => reject(err instanceof Error ? err : new Error(String(err))));
          return;
        }
        if (matched) finish(() => resolve(event));
      });
      const unsubscribeClose = this.onClose((err) => {
        finish(() =>
          reject(
            err instanceof QmpProtocolError
              ? err
              : new QmpClosedError('QMP connection closed while waiting for an event', { cause: err }),
          ),
        );
      });
    });
  }

  /**
   * Called once when the connection closes: with no argument after close(), with the reason
   * (QmpClosedError, QmpProtocolError, ...) otherwise. Registering after the close calls the
   * listener asynchronously. Returns an unsubscribe function.
   */
  onClose(listener: CloseListener): () => void {
    if (this.isClosed) {
      const reason = this.closeReason;
      queueMicrotask(() => listener(reason));
      return () => undefined;
    }
    this.closeListeners.add(listener);
    return () => {
      this.closeListeners.delete(listener);
    };
  }

  /** End the connection. Pending commands reject with QmpClosedError. Idempotent. */
  async close(): Promise<void> {
    if (!this.isClosed) this.teardown(undefined);
    const timer = setTimeout(() => this.socket.destroy(), 1_000);
    try {
      await this.socketClosed;
    } finally {
      clearTimeout(timer);
    }
  }

  // -------------------------------------------------------------------------------------------

  /** Take over the socket after the greeting: line reader, close/error handling. */
  private attach(leftover: string): void {
    let buffer = '';
    const onData = (chunk: string): void => {
      let start = 0;
      let nl: number;
      while (!this.isClosed && (nl = chunk.indexOf('\n', start)) !== -1) {
        const line = buffer + chunk.slice(start, nl);
        buffer = '';
        start = nl + 1;
        this.handleLine(line);
      }
      if (this.isClosed) return;
      buffer += chunk.slice(start);
      if (buffer.length > MAX_LINE_CHARS) {
        this.teardown(new QmpProtocolError(`QMP line longer than ${MAX_LINE_CHARS} characters`));
      }
    };
    this.socket.on('data', onData);
    this.socket.on('error', (err) => {
      this.teardown(new QmpClosedError(`QMP socket error: ${err.message}`, { cause: err }));
    });
    this.socket.on('close', () => {
      this.teardown(new QmpClosedError('QMP connection closed by peer'));
    });
    if (leftover.length > 0) onData(leftover);
    this.socket.resume();
  }

  private handleLine(rawLine: string): void {
    const line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
    if (line.trim() === '') return;
    let message: unknown;
    try {
      message = JSON.parse(line);
    } catch (err) {
      this.teardown(new QmpProtocolError('QMP peer sent a line that is not JSON', { raw: line, cause: err }));
      return;
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message)) {
      this.teardown(new QmpProtocolError('QMP message is not a JSON object', { raw: line }));
      return;
    }
    if ('event' in message) {
      const parsed = eventSchema.safeParse(message);
      if (!parsed.success) return this.schemaFailure('event', line, parsed.error);
      for (const listener of [...this.eventListeners]) {
        try {
          listener(parsed.data);
        } catch {
          // A listener's bug must not break the reader or other listeners.
        }
      }
      return;
    }
    if ('return' in message) {
      const parsed = successReplySchema.safeParse(message);
      if (!parsed.success) return this.schemaFailure('success reply', line, parsed.error);
      const pending = this.takePending(parsed.data.id, line);
      pending?.resolve(parsed.data.return);
      return;
    }
    if ('error' in message) {
      const parsed = errorReplySchema.safeParse(message);
      if (!parsed.success) return this.schemaFailure('error reply', line, parsed.error);
      const pending = this.takePending(parsed.data.id, line);
      pending?.reject(new QmpCommandError(pending.command, parsed.data.error.class, parsed.data.error.desc));
      return;
    }
    this.teardown(new QmpProtocolError('unrecognized QMP message (no event/return/error)', { raw: line }));
  }

  /**
   * Find and remove the pending command for a reply id. Unknown ids (e.g. a late reply to a
   * timed-out command) are dropped. A reply without id is a desync (we always send ids): fatal.
   */
  private takePending(id: string | number | undefined, line: string): PendingCommand | undefined {
    if (id === undefined) {
      this.teardown(new QmpProtocolError('QMP reply without id (QEMU could not parse a request?)', { raw: line }));
      return undefined;
    }
    const key = String(id);
    const pending = this.pending.get(key);
    if (pending === undefined) return undefined;
    this.pending.delete(key);
    clearTimeout(pending.timer);
    return pending;
  }

  private schemaFailure(kind: string, line: string, error: z.ZodError): void {
    this.teardown(
      new QmpProtocolError(`QMP ${kind} does not match the schema: ${z.prettifyError(error)}`, {
        raw: line,
        cause: error,
      }),
    );
  }

  /** Close once: reject everything pending, notify close listeners. `reason` undefined = close(). */
  private teardown(reason: Error | undefined): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closeReason = reason;
    const pendingError = (command: string): Error =>
      reason instanceof QmpProtocolError
        ? reason
        : new QmpClosedError(
            reason === undefined
              ? `QMP connection closed by client while '${command}' was pending`
              : `QMP connection closed while '${command}' was pending: ${reason.message}`,
            { cause: reason },
          );
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(pendingError(p.command));
    }
    if (reason === undefined) this.socket.end();
    else this.socket.destroy();
    const listeners = [...this.closeListeners];
    this.closeListeners.clear();
    for (const listener of listeners) {
      try {
        listener(reason);
      } catch {
        // ignore listener bugs
      }
    }
  }
}

/**
 * Wait for the socket to connect and deliver the greeting line. Returns the greeting and whatever
 * arrived after it in the same chunk.
 */
function readGreeting(
  socket: net.Socket,
  socketPath: string,
  timeoutMs: number,
): Promise<{ greeting: QmpGreeting; leftover: string }> {
  return new Promise((resolve, reject) => {
    let connected = false;
    let buffer = '';
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.off('connect', onConnect);
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    const fail = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const timer = setTimeout(() => fail(new QmpTimeoutError('connect', timeoutMs)), timeoutMs);
    const onConnect = (): void => {
      connected = true;
    };
    const onError = (err: NodeJS.ErrnoException): void => {
      if (!connected) fail(new QmpConnectError(socketPath, err.code, { cause: err }));
      else fail(new QmpClosedError(`QMP socket error before greeting: ${err.message}`, { cause: err }));
    };
    const onClose = (): void => fail(new QmpClosedError('QMP connection closed before the greeting'));
    const onData = (chunk: string): void => {
      buffer += chunk;
      const nl = buffer.indexOf('\n');
      if (nl === -1) {
        if (buffer.length > MAX_LINE_CHARS) fail(new QmpProtocolError('QMP greeting too long'));
        return;
      }
      const line = buffer.slice(0, nl).replace(/\r$/, '');
      const leftover = buffer.slice(nl + 1);
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch (err) {
        fail(new QmpProtocolError('QMP greeting is not JSON', { raw: line, cause: err }));
        return;
      }
      const parsed = greetingSchema.safeParse(message);
      if (!parsed.success) {
        fail(
          new QmpProtocolError(`QMP greeting does not match the schema: ${z.prettifyError(parsed.error)}`, {
            raw: line,
            cause: parsed.error,
          }),
        );
        return;
      }
      cleanup();
      socket.pause(); // hold further data until the client attaches its reader
      resolve({ greeting: parsed.data, leftover });
    };
    socket.on('connect', onConnect);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}

function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

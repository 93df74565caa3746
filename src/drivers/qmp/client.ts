/**
 * Minimal QMP (QEMU Machine Protocol) client over a unix socket, using node:net only.
 *
 * Wire format: newline-delimited JSON (QEMU's default, non-pretty monitor output). On connect QEMU
 * sends a greeting; the client must send `qmp_capabilities` before any other command and before
 * QEMU emits events. Each command we send carries a unique string `id`; replies are matched by id,
 * so several commands may be in flight (QEMU itself executes in-band commands one at a time, in
 * order). How each kind of failure surfaces: errors.ts.
 *
 * Note: a QEMU `-qmp unix:...,server=on` chardev serves ONE client at a time. A second connect
 * succeeds at the socket level but gets no greeting until the first client disconnects, so
 * connect() then ends in QmpTimeoutError.
 */
import * as net from 'node:net';

import type { z } from 'zod';

import { QmpClosedError, QmpCommandError, QmpError, QmpProtocolError, QmpTimeoutError } from './errors';
import { waitForEvent } from './events';
import { readGreeting } from './greeting';
import { LineBuffer, parseQmpLine, parseReply, type QmpMessage } from './messages';
import { PendingCommands } from './pending';
import type { QmpEvent, QmpGreeting } from './schemas';

export type { QmpEvent, QmpGreeting } from './schemas';

export const DEFAULT_COMMAND_TIMEOUT_MS = 30_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 30_000;

export interface QmpConnectOptions {
  /** Deadline for socket connect + greeting + qmp_capabilities. Default 30 s. */
  timeoutMs?: number;
}

export interface QmpExecuteOptions {
  /** Default 30 s. */
  timeoutMs?: number;
}

type CloseListener = (err?: Error) => void;
type EventListener = (event: QmpEvent) => void;

export class QmpClient {
  /** The greeting QEMU sent (version, capabilities). */
  readonly greeting: QmpGreeting;
  readonly socketPath: string;

  private readonly socket: net.Socket;
  private readonly pending = new PendingCommands();
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
  execute(command: string, args?: Record<string, unknown>, opts: QmpExecuteOptions = {}): Promise<unknown> {
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
    const reply = this.pending.add(id, command, timeoutMs);
    this.socket.write(line);
    return reply;
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
    return parseReply(command, await this.execute(command, args, opts), schema);
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
      return Promise.reject(
        new QmpClosedError('QMP connection closed; cannot wait for events', { cause: this.closeReason }),
      );
    }
    return waitForEvent(this, predicate, timeoutMs);
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
    const lines = new LineBuffer();
    const onData = (chunk: string): void => {
      let complete: string[];
      try {
        complete = lines.push(chunk);
      } catch (err) {
        this.teardown(err instanceof Error ? err : new QmpProtocolError(String(err)));
        return;
      }
      for (const line of complete) {
        if (this.isClosed) return;
        this.handleLine(line);
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
    let message: QmpMessage | undefined;
    try {
      message = parseQmpLine(rawLine);
    } catch (err) {
      this.teardown(err instanceof Error ? err : new QmpProtocolError(String(err)));
      return;
    }
    if (message?.kind === 'event') {
      for (const listener of [...this.eventListeners]) {
        try {
          listener(message.event);
        } catch {
          // A listener's bug must not break the reader or other listeners.
        }
      }
    } else if (message?.kind === 'return') {
      this.takePending(message.id, rawLine)?.resolve(message.value);
    } else if (message?.kind === 'error') {
      const pending = this.takePending(message.id, rawLine);
      pending?.reject(new QmpCommandError(pending.command, message.errorClass, message.desc));
    }
  }

  /**
   * Find and remove the pending command for a reply id. Unknown ids (e.g. a late reply to a
   * timed-out command) are dropped. A reply without id is a desync (we always send ids): fatal.
   */
  private takePending(id: string | number | undefined, line: string): ReturnType<PendingCommands['take']> {
    if (id === undefined) {
      this.teardown(new QmpProtocolError('QMP reply without id (QEMU could not parse a request?)', { raw: line }));
      return undefined;
    }
    return this.pending.take(id);
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
    this.pending.rejectAll(pendingError);
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

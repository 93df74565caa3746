import { z } from 'zod';

import { QmpProtocolError } from './errors';
import {
  errorReplySchema,
  eventSchema,
  greetingSchema,
  type QmpEvent,
  type QmpGreeting,
  successReplySchema,
} from './schemas';

/** Refuse to buffer a single line beyond this (garbage on the socket, not real QMP). */
export const MAX_LINE_CHARS = 256 * 1024 * 1024;

/** Splits the socket's chunks into lines, keeping a partial line for the next chunk. */
export class LineBuffer {
  private partial = '';

  /** The lines `chunk` completes. Throws QmpProtocolError once a line outgrows MAX_LINE_CHARS. */
  push(chunk: string): string[] {
    const lines: string[] = [];
    let start = 0;
    for (let nl = chunk.indexOf('\n'); nl !== -1; nl = chunk.indexOf('\n', start)) {
      lines.push(this.partial + chunk.slice(start, nl));
      this.partial = '';
      start = nl + 1;
    }
    this.partial += chunk.slice(start);
    if (this.partial.length > MAX_LINE_CHARS)
      throw new QmpProtocolError(`QMP line longer than ${MAX_LINE_CHARS} characters`);
    return lines;
  }
}

/** One line QEMU sent after the greeting. */
export type QmpMessage =
  | { kind: 'event'; event: QmpEvent }
  | { kind: 'return'; id: string | number | undefined; value: unknown }
  | { kind: 'error'; id: string | number | undefined; errorClass: string; desc: string };

/**
 * Parses one line of the QMP stream; undefined for a blank line. Anything that is not a QMP
 * message (not JSON, not an object, failing the wire schema) throws QmpProtocolError: the stream
 * can no longer be trusted.
 */
export function parseQmpLine(rawLine: string): QmpMessage | undefined {
  const line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
  if (line.trim() === '') return undefined;
  const message = parseJsonObject(line, 'QMP peer sent a line that is not JSON');
  if ('event' in message) {
    return { kind: 'event', event: parseWith(eventSchema, message, 'event', line) };
  }
  if ('return' in message) {
    const reply = parseWith(successReplySchema, message, 'success reply', line);
    return { kind: 'return', id: reply.id, value: reply.return };
  }
  if ('error' in message) {
    const reply = parseWith(errorReplySchema, message, 'error reply', line);
    return { kind: 'error', id: reply.id, errorClass: reply.error.class, desc: reply.error.desc };
  }
  throw new QmpProtocolError('unrecognized QMP message (no event/return/error)', { raw: line });
}

/** Parses the greeting line QEMU sends on connect. */
export function parseGreeting(rawLine: string): QmpGreeting {
  const line = rawLine.replace(/\r$/, '');
  return parseWith(greetingSchema, parseJsonObject(line, 'QMP greeting is not JSON'), 'greeting', line);
}

function parseJsonObject(line: string, notJson: string): object {
  let message: unknown;
  try {
    message = JSON.parse(line);
  } catch (err) {
    throw new QmpProtocolError(notJson, { raw: line, cause: err });
  }
  if (typeof message !== 'object' || message === null || Array.isArray(message)) {
    throw new QmpProtocolError('QMP message is not a JSON object', { raw: line });
  }
  return message;
}

function parseWith<S extends z.ZodType>(schema: S, message: object, kind: string, line: string): z.infer<S> {
  const parsed = schema.safeParse(message);
  if (!parsed.success) {
    throw new QmpProtocolError(`QMP ${kind} does not match the schema: ${z.prettifyError(parsed.error)}`, {
      raw: line,
      cause: parsed.error,
    });
  }
  return parsed.data;
}

/** A command's `return` value checked with `schema`; a mismatch is a QmpProtocolError naming the command. */
export function parseReply<S extends z.ZodType>(command: string, value: unknown, schema: S): z.infer<S> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new QmpProtocolError(
      `reply to QMP command '${command}' does not match the expected schema: ${z.prettifyError(parsed.error)}`,
      { command, raw: safeStringify(value), cause: parsed.error },
    );
  }
  return parsed.data;
}

function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

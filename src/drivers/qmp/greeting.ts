import type * as net from 'node:net';

import { QmpClosedError, QmpConnectError, QmpProtocolError, QmpTimeoutError } from './errors';
import { MAX_LINE_CHARS, parseGreeting } from './messages';
import type { QmpGreeting } from './schemas';

/**
 * Wait for the socket to connect and deliver the greeting line. Returns the greeting and whatever
 * arrived after it in the same chunk.
 */
export function readGreeting(
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
      const leftover = buffer.slice(nl + 1);
      let greeting: QmpGreeting;
      try {
        greeting = parseGreeting(buffer.slice(0, nl));
      } catch (err) {
        fail(err instanceof Error ? err : new QmpProtocolError(String(err)));
        return;
      }
      cleanup();
      socket.pause(); // hold further data until the client attaches its reader
      resolve({ greeting, leftover });
    };
    socket.on('connect', onConnect);
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
}

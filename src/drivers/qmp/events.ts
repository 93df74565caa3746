import { QmpClosedError, QmpProtocolError, QmpTimeoutError } from './errors';
import type { QmpEvent } from './schemas';

interface EventSource {
  onEvent(listener: (event: QmpEvent) => void): () => void;
  onClose(listener: (err?: Error) => void): () => void;
}

/**
 * Resolves with the first event from `source` (received after this call) that satisfies
 * `predicate`. Rejects with QmpTimeoutError, QmpClosedError (or the QmpProtocolError that closed
 * the connection), or whatever `predicate` throws.
 */
export function waitForEvent(
  source: EventSource,
  predicate: (event: QmpEvent) => boolean,
  timeoutMs: number,
): Promise<QmpEvent> {
  return new Promise<QmpEvent>((resolve, reject) => {
    const finish = (fn: () => void): void => {
      clearTimeout(timer);
      unsubscribeEvent();
      unsubscribeClose();
      fn();
    };
    const timer = setTimeout(() => finish(() => reject(new QmpTimeoutError('waitForEvent', timeoutMs))), timeoutMs);
    const unsubscribeEvent = source.onEvent((event) => {
      let matched: boolean;
      try {
        matched = predicate(event);
      } catch (err) {
        finish(() => reject(err instanceof Error ? err : new Error(String(err))));
        return;
      }
      if (matched) finish(() => resolve(event));
    });
    const unsubscribeClose = source.onClose((err) => {
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

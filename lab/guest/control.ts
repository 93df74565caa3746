/** Asking the lab guest to stop: the line "STOP" on its console (the first serial port's unix socket). */
import * as net from 'node:net';

import { countAcks } from './acks';

export type GuestStopAnswer = 'closed' | 'timeout' | 'unreachable';

/**
 * Writes "STOP\n" into the guest's console socket, then keeps reading (and discarding) what the
 * console prints, so the guest never waits on a full serial line, until QEMU closes the socket (it
 * exits once the writer has flushed and powered the VM off) or `timeoutMs` passes. A QEMU that is
 * gone, or whose console already has a client, is 'unreachable'.
 */
export function requestGuestStop(consoleSocket: string, timeoutMs = 20_000): Promise<GuestStopAnswer> {
  return new Promise((resolve) => {
    let settled = false;
    let connected = false;
    const sock = net.createConnection(consoleSocket);
    const done = (answer: GuestStopAnswer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done(connected ? 'timeout' : 'unreachable'), timeoutMs);
    sock.on('connect', () => {
      connected = true;
      sock.write('STOP\n');
    });
    sock.on('data', () => undefined);
    sock.on('error', () => done(connected ? 'closed' : 'unreachable'));
    sock.on('close', () => done(connected ? 'closed' : 'unreachable'));
  });
}

/**
 * Resolves with the number of ACK lines once `ackLog` holds at least `atLeast` of them; rejects
 * after `timeoutMs` (the guest boots in about 3 s under TCG), or at once when `alive()` says its
 * QEMU is gone.
 */
export async function waitForGuestAcks(
  ackLog: string,
  atLeast: number,
  options: { timeoutMs?: number; alive?: () => Promise<boolean> } = {},
): Promise<number> {
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (;;) {
    const n = await countAcks(ackLog);
    if (n >= atLeast) return n;
    if (options.alive && !(await options.alive()))
      throw new Error(`the guest's QEMU ended with ${n} ACK(s) in ${ackLog}, waiting for ${atLeast}`);
    if (Date.now() > deadline) throw new Error(`${ackLog} holds ${n} ACK(s) after the wait, not ${atLeast}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

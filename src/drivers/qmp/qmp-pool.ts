import { existsSync } from 'node:fs';

import { VmGoneError, VmNotFoundError } from '../errors';
import { QmpClient } from './client';
import { QmpClosedError, QmpConnectError } from './errors';

/**
 * One QMP connection per VM, shared by every activity of this host agent. A QMP socket serves one
 * client at a time, so each activity opening its own would queue behind a long block-job wait.
 */
export class QmpPool {
  private readonly clients = new Map<string, Promise<QmpClient>>();

  constructor(private readonly socketOf: (vmId: string) => string) {}

  async get(vmId: string): Promise<QmpClient> {
    const existing = this.clients.get(vmId);
    if (existing) {
      const client = await existing.catch(() => undefined);
      if (client && !client.closed) return client;
      this.clients.delete(vmId);
    }
    const socketPath = this.socketOf(vmId);
    const connecting = this.connect(vmId, socketPath);
    this.clients.set(vmId, connecting);
    connecting.catch(() => this.clients.delete(vmId));
    return connecting;
  }

  /** Runs `fn` on the VM's connection; a connection that broke under it is opened again once. */
  async with<T>(vmId: string, fn: (client: QmpClient) => Promise<T>): Promise<T> {
    try {
      return await fn(await this.get(vmId));
    } catch (err) {
      if (!(err instanceof QmpClosedError)) throw err;
      return fn(await this.get(vmId));
    }
  }

  async close(): Promise<void> {
    const all = [...this.clients.values()];
    this.clients.clear();
    await Promise.all(all.map(async (p) => (await p.catch(() => undefined))?.close()));
  }

  private async connect(vmId: string, socketPath: string): Promise<QmpClient> {
    if (!existsSync(socketPath))
      throw new VmNotFoundError(`VM ${vmId} does not run on this host (no QMP socket at ${socketPath})`);
    try {
      const client = await QmpClient.connect(socketPath, { timeoutMs: 10_000 });
      client.onClose(() => {
        if (this.clients.get(vmId)) this.clients.delete(vmId);
      });
      return client;
    } catch (err) {
      if (err instanceof QmpConnectError && err.code === 'ENOENT') {
        throw new VmNotFoundError(`VM ${vmId} does not run on this host (no QMP socket at ${socketPath})`);
      }
      const gone = (how: string): VmGoneError =>
        new VmGoneError(`VM ${vmId} is gone: its QEMU no longer answers on ${socketPath} (${how})`, { cause: err });
      if (err instanceof QmpConnectError && err.code === 'ECONNREFUSED') throw gone('nothing listens on it');
      // A QEMU that is exiting closes its listening socket with our connection still queued on it.
      if (err instanceof QmpConnectError && err.code === 'ECONNRESET') throw gone('it closed before accepting us');
      // Or it accepted us a moment before it exited, and closed before its greeting.
      if (err instanceof QmpClosedError) throw gone('it closed before its greeting');
      throw err;
    }
  }
}

import * as path from 'node:path';

import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';

import { type DevServer, type DevServerOptions, startDevServer } from './dev-server';

/** A dev server with a client and a worker connection to it: what tests and benchmarks start. */
export interface ConnectedDevServer {
  server: DevServer;
  client: Client;
  /** For workers. */
  connection: NativeConnection;
  clientConnection: Connection;
  /** Closes both connections, then stops the server. */
  close(): Promise<void>;
}

/** Starts a headless dev server with its SQLite file and log in `dir`, and connects to it. */
export async function startConnectedDevServer(
  dir: string,
  opts: Pick<DevServerOptions, 'headless' | 'registerSearchAttributes'> = {},
): Promise<ConnectedDevServer> {
  const server = await startDevServer({
    dbFile: path.join(dir, 'temporal.sqlite'),
    logFile: path.join(dir, 'server.log'),
    headless: opts.headless ?? true,
    registerSearchAttributes: opts.registerSearchAttributes,
  });
  const clientConnection = await Connection.connect({ address: server.address });
  const connection = await NativeConnection.connect({ address: server.address });
  const client = new Client({ connection: clientConnection, namespace: server.namespace });
  return {
    server,
    client,
    connection,
    clientConnection,
    async close() {
      await clientConnection.close();
      await connection.close();
      await server.stop();
    },
  };
}

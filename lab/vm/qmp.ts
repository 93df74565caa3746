/** One QMP command at a time, on the product's QMP client. */
import * as path from 'node:path';

import { auxQmpSocketPath } from '../../src/domain/layout';
import { QmpClient } from '../../src/drivers/qmp/client';

/**
 * Runs one QMP command on a socket and returns its `return` value. A QMP socket serves one client
 * at a time: while another client is connected the connection is accepted but no greeting comes,
 * which ends here as a QmpTimeoutError.
 */
export async function qmpCommand(
  socketPath: string,
  command: string,
  args?: Record<string, unknown>,
  timeoutMs = 10_000,
): Promise<unknown> {
  const qmp = await QmpClient.connect(socketPath, { timeoutMs });
  try {
    return await qmp.execute(command, args, { timeoutMs });
  } finally {
    await qmp.close();
  }
}

/** One QMP command on a lab VM's aux socket (the host agent keeps the main one). */
export function auxQmpCommand(
  runDir: string,
  vmId: string,
  command: string,
  args?: Record<string, unknown>,
): Promise<unknown> {
  return qmpCommand(auxQmpSocketPath(path.resolve(runDir), vmId), command, args);
}

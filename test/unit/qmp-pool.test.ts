import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { VmGoneError, VmNotFoundError } from '../../src/drivers/errors';
import { QmpClient } from '../../src/drivers/qmp/client';
import { QmpConnectError } from '../../src/drivers/qmp/errors';
import { QmpPool } from '../../src/drivers/qmp/qmp-pool';

/** How the pool names a VM that is not there, by what its QMP socket does. */
describe('QmpPool: a VM whose QEMU is missing or dying', () => {
  let dir: string;
  let server: net.Server | undefined;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-pool-'));
  });
  afterEach(async () => {
    jest.restoreAllMocks();
    if (server) await new Promise<void>((resolve) => server?.close(() => resolve()));
    server = undefined;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const listen = async (onConnection: (socket: net.Socket) => void): Promise<string> => {
    const socketPath = path.join(dir, 'vm.qmp');
    server = net.createServer(onConnection);
    await new Promise<void>((resolve) => server?.listen(socketPath, resolve));
    return socketPath;
  };

  test('no socket: the VM does not run here', async () => {
    const pool = new QmpPool(() => path.join(dir, 'absent.qmp'));
    await expect(pool.get('vm1')).rejects.toBeInstanceOf(VmNotFoundError);
  });

  test('a QEMU that accepts and closes before its greeting (exiting): the VM is gone', async () => {
    const socketPath = await listen((socket) => socket.destroy());
    const pool = new QmpPool(() => socketPath);
    await expect(pool.get('vm1')).rejects.toBeInstanceOf(VmGoneError);
    await pool.close();
  });

  test('a stale socket file nobody listens on (QEMU killed): the VM is gone', async () => {
    const socketPath = path.join(dir, 'vm.qmp');
    fs.writeFileSync(socketPath, '');
    const pool = new QmpPool(() => socketPath);
    const err = await pool.get('vm1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmGoneError);
    expect((err as Error).message).toBe(
      `VM vm1 is gone: its QEMU no longer answers on ${socketPath} (nothing listens on it)`,
    );
  });

  /** The kernel resets a connection still queued when the listener closes; too brief a window to hit on demand. */
  const connectFailsWith = (code: string): string => {
    const socketPath = path.join(dir, 'vm.qmp');
    fs.writeFileSync(socketPath, '');
    jest.spyOn(QmpClient, 'connect').mockRejectedValue(new QmpConnectError(socketPath, code));
    return socketPath;
  };

  test('a QEMU that closes its socket with our connection still queued (exiting): the VM is gone', async () => {
    const socketPath = connectFailsWith('ECONNRESET');
    const err = await new QmpPool(() => socketPath).get('vm1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(VmGoneError);
    expect((err as Error).message).toMatch(
      /^VM vm1 is gone: its QEMU no longer answers on .* \(it closed before accepting us\)$/,
    );
  });

  test('any other connect failure is not taken for a gone VM', async () => {
    const socketPath = connectFailsWith('EAGAIN');
    const err = await new QmpPool(() => socketPath).get('vm1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpConnectError);
    expect((err as QmpConnectError).code).toBe('EAGAIN');
  });
});

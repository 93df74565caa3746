import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { VmGoneError, VmNotFoundError } from '../../src/host/errors';
import { QmpPool } from '../../src/host/qmp-pool';

/** How the pool names a VM that is not there, by what its QMP socket does. */
describe('QmpPool: a VM whose QEMU is missing or dying', () => {
  let dir: string;
  let server: net.Server | undefined;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-pool-'));
  });
  afterEach(async () => {
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
});

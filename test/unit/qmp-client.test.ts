import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { z } from 'zod';

import { QmpClient, type QmpEvent } from '../../src/drivers/qmp/client';
import {
  QmpClosedError,
  QmpCommandError,
  QmpConnectError,
  QmpError,
  QmpProtocolError,
  QmpTimeoutError,
} from '../../src/drivers/qmp/errors';
import {
  blockInfoSchema,
  deviceIdOf,
  flattenImageChain,
  imageInfoSchema,
  nodeFilesOf,
  queryJobsSchema,
  queryNamedBlockNodesSchema,
  resolveImageFilename,
} from '../../src/drivers/qmp/schemas';

// ---------------------------------------------------------------------------------------------
// Fake QMP server
// ---------------------------------------------------------------------------------------------

const GREETING = {
  QMP: {
    version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' },
    capabilities: ['oob'],
  },
};

interface Command {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: unknown;
}

/** The server side of one client connection. */
class ServerConn {
  private buffer = '';
  private readonly queue: Command[] = [];
  private readonly waiters: Array<(c: Command) => void> = [];
  readonly closed: Promise<void>;

  constructor(readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) !== -1) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        const cmd = JSON.parse(line) as Command;
        const waiter = this.waiters.shift();
        if (waiter) waiter(cmd);
        else this.queue.push(cmd);
      }
    });
  }

  nextCommand(): Promise<Command> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  send(message: unknown): void {
    this.socket.write(`${JSON.stringify(message)}\n`);
  }

  sendRaw(data: string | Buffer): void {
    this.socket.write(data);
  }

  reply(cmd: Command, value: unknown = {}): void {
    this.send({ return: value, id: cmd.id });
  }
}

interface FakeServerOptions {
  /** Raw first line to send instead of the normal greeting; null = send nothing. */
  greeting?: string | null;
  /** Answer qmp_capabilities automatically (default true). */
  autoCapabilities?: boolean;
}

class FakeQmpServer {
  private readonly connections: ServerConn[] = [];
  private readonly connWaiters: Array<(c: ServerConn) => void> = [];

  private constructor(
    readonly server: net.Server,
    readonly socketPath: string,
  ) {}

  static async start(dir: string, opts: FakeServerOptions = {}): Promise<FakeQmpServer> {
    const socketPath = path.join(dir, `qmp-${Math.random().toString(36).slice(2)}.sock`);
    const server = net.createServer((socket) => {
      const conn = new ServerConn(socket);
      if (opts.greeting !== null) socket.write(opts.greeting ?? `${JSON.stringify(GREETING)}\n`);
      const deliver = (): void => {
        const waiter = fake.connWaiters.shift();
        if (waiter) waiter(conn);
        else fake.connections.push(conn);
      };
      if (opts.autoCapabilities ?? true) {
        void conn.nextCommand().then((cmd) => {
          if (cmd.execute === 'qmp_capabilities') conn.reply(cmd);
          deliver();
        });
      } else {
        deliver();
      }
    });
    // Connections arrive only once it listens, after this: the handler above reads it then.
    const fake = new FakeQmpServer(server, socketPath);
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    return fake;
  }

  /** The next connection (after its capabilities handshake when autoCapabilities). */
  nextConnection(): Promise<ServerConn> {
    const c = this.connections.shift();
    if (c) return Promise.resolve(c);
    return new Promise((resolve) => this.connWaiters.push(resolve));
  }

  async stop(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      // server.close waits for connections; tests close their clients, but be safe.
      setTimeout(resolve, 200).unref();
    });
  }
}

function event(name: string, data?: Record<string, unknown>): QmpEvent {
  return { event: name, ...(data ? { data } : {}), timestamp: { seconds: 1795629933, microseconds: 243532 } };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------

let dir: string;
const servers: FakeQmpServer[] = [];
const clients: QmpClient[] = [];

async function setup(
  opts: FakeServerOptions = {},
): Promise<{ server: FakeQmpServer; client: QmpClient; conn: ServerConn }> {
  const server = await FakeQmpServer.start(dir, opts);
  servers.push(server);
  const client = await QmpClient.connect(server.socketPath, { timeoutMs: 2_000 });
  clients.push(client);
  const conn = await server.nextConnection();
  return { server, client, conn };
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qmp-unit-'));
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(servers.splice(0).map((s) => s.stop()));
});

afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('QmpClient handshake', () => {
  test('parses the greeting and sends qmp_capabilities with an id before resolving', async () => {
    const server = await FakeQmpServer.start(dir, { autoCapabilities: false });
    servers.push(server);
    let connected = false;
    const connecting = QmpClient.connect(server.socketPath, { timeoutMs: 2_000 }).then((c) => {
      connected = true;
      clients.push(c);
      return c;
    });
    const conn = await server.nextConnection();
    const cmd = await conn.nextCommand();
    expect(cmd.execute).toBe('qmp_capabilities');
    expect(typeof cmd.id).toBe('string');
    expect(cmd.arguments).toBeUndefined();
    await sleep(20);
    expect(connected).toBe(false); // not before the capabilities reply
    conn.reply(cmd);
    const client = await connecting;
    expect(client.greeting.QMP.version.qemu).toEqual({ major: 7, minor: 2, micro: 22 });
    expect(client.greeting.QMP.capabilities).toEqual(['oob']);
    expect(client.closed).toBe(false);
  });

  test('greeting that fails the schema rejects with QmpProtocolError', async () => {
    const server = await FakeQmpServer.start(dir, { greeting: '{"QMP": {"version": 7}}\n' });
    servers.push(server);
    const err = await QmpClient.connect(server.socketPath, { timeoutMs: 2_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpProtocolError);
    expect(err).toBeInstanceOf(QmpError);
    expect((err as Error).name).toBe('QmpProtocolError');
  });

  test('greeting that is not JSON rejects with QmpProtocolError', async () => {
    const server = await FakeQmpServer.start(dir, { greeting: 'hello there\n' });
    servers.push(server);
    await expect(QmpClient.connect(server.socketPath, { timeoutMs: 2_000 })).rejects.toBeInstanceOf(QmpProtocolError);
  });

  test('no greeting (e.g. QEMU busy with another client) → QmpTimeoutError', async () => {
    const server = await FakeQmpServer.start(dir, { greeting: null, autoCapabilities: false });
    servers.push(server);
    const err = await QmpClient.connect(server.socketPath, { timeoutMs: 150 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpTimeoutError);
    expect((err as QmpTimeoutError).operation).toBe('connect');
    expect((err as Error).name).toBe('QmpTimeoutError');
  });

  test('greeting and capabilities reply in one chunk', async () => {
    const server = await FakeQmpServer.start(dir, { greeting: null, autoCapabilities: false });
    servers.push(server);
    const connecting = QmpClient.connect(server.socketPath, { timeoutMs: 2_000 });
    const conn = await server.nextConnection();
    // Send the greeting, then answer the capabilities command together with an event in one write.
    conn.send(GREETING);
    const cmd = await conn.nextCommand();
    conn.sendRaw(`${JSON.stringify({ return: {}, id: cmd.id })}\n${JSON.stringify(event('RESUME'))}\n`);
    const client = await connecting;
    clients.push(client);
    expect(client.closed).toBe(false);
  });

  test('missing socket → QmpConnectError ENOENT', async () => {
    const socketPath = path.join(dir, 'does-not-exist.sock');
    const err = await QmpClient.connect(socketPath, { timeoutMs: 1_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpConnectError);
    expect((err as QmpConnectError).code).toBe('ENOENT');
    expect((err as QmpConnectError).socketPath).toBe(socketPath);
    expect((err as Error).name).toBe('QmpConnectError');
  });

  test('path that is not a listening socket → QmpConnectError ECONNREFUSED', async () => {
    const socketPath = path.join(dir, 'plain-file.sock');
    fs.writeFileSync(socketPath, '');
    const err = await QmpClient.connect(socketPath, { timeoutMs: 1_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpConnectError);
    expect((err as QmpConnectError).code).toBe('ECONNREFUSED');
  });
});

describe('QmpClient commands', () => {
  test('sends execute/arguments/id and resolves with return', async () => {
    const { client, conn } = await setup();
    const p = client.execute('query-status');
    const cmd = await conn.nextCommand();
    expect(cmd).toEqual({ execute: 'query-status', id: cmd.id });
    conn.reply(cmd, { status: 'prelaunch', running: false });
    await expect(p).resolves.toEqual({ status: 'prelaunch', running: false });

    const p2 = client.execute('job-dismiss', { id: 'j1' });
    const cmd2 = await conn.nextCommand();
    expect(cmd2.arguments).toEqual({ id: 'j1' });
    expect(cmd2.id).not.toEqual(cmd.id);
    conn.reply(cmd2);
    await expect(p2).resolves.toEqual({});
  });

  test('two commands in flight answered out of order are matched by id', async () => {
    const { client, conn } = await setup();
    const a = client.execute('query-jobs');
    const b = client.execute('query-block-jobs');
    const cmdA = await conn.nextCommand();
    const cmdB = await conn.nextCommand();
    expect(cmdA.execute).toBe('query-jobs');
    expect(cmdB.execute).toBe('query-block-jobs');
    expect(cmdA.id).not.toEqual(cmdB.id);
    conn.reply(cmdB, ['B']);
    conn.reply(cmdA, ['A']);
    await expect(a).resolves.toEqual(['A']);
    await expect(b).resolves.toEqual(['B']);
  });

  test('error reply → QmpCommandError with class and desc; connection stays usable', async () => {
    const { client, conn } = await setup();
    const p = client.execute('job-dismiss', { id: 'nojob' });
    const cmd = await conn.nextCommand();
    conn.send({ id: cmd.id, error: { class: 'GenericError', desc: 'Job not found' } });
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpCommandError);
    expect(err).toBeInstanceOf(QmpError);
    expect(err).toBeInstanceOf(Error);
    const ce = err as QmpCommandError;
    expect(ce.name).toBe('QmpCommandError');
    expect(ce.command).toBe('job-dismiss');
    expect(ce.errorClass).toBe('GenericError');
    expect(ce.desc).toBe('Job not found');
    expect(ce.message).toContain('Job not found');

    const p2 = client.execute('query-jobs');
    conn.reply(await conn.nextCommand(), []);
    await expect(p2).resolves.toEqual([]);
  });

  test('timeout → QmpTimeoutError; a late reply is dropped and the connection stays usable', async () => {
    const { client, conn } = await setup();
    const p = client.execute('query-jobs', undefined, { timeoutMs: 50 });
    const cmd = await conn.nextCommand();
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpTimeoutError);
    expect((err as QmpTimeoutError).operation).toBe('query-jobs');
    expect((err as QmpTimeoutError).timeoutMs).toBe(50);
    conn.reply(cmd, ['late']); // ignored
    const p2 = client.execute('query-block-jobs');
    conn.reply(await conn.nextCommand(), ['fresh']);
    await expect(p2).resolves.toEqual(['fresh']);
    expect(client.closed).toBe(false);
  });

  test('executeParsed validates the return value', async () => {
    const { client, conn } = await setup();
    const job = { id: 'j1', type: 'commit', status: 'ready', 'current-progress': 4, 'total-progress': 4, extra: 1 };
    const ok = client.executeParsed('query-jobs', undefined, queryJobsSchema);
    conn.reply(await conn.nextCommand(), [job]);
    const jobs = await ok;
    expect(jobs[0]?.status).toBe('ready');
    expect(jobs[0]?.['current-progress']).toBe(4);

    const bad = client.executeParsed('query-jobs', undefined, queryJobsSchema);
    conn.reply(await conn.nextCommand(), [{ id: 'j1', status: 'ready' }]);
    const err = await bad.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpProtocolError);
    expect((err as QmpProtocolError).command).toBe('query-jobs');
    expect((err as Error).message).toContain('query-jobs');
    expect(client.closed).toBe(false);

    const typed = client.executeParsed('x', { a: 1 }, z.object({ n: z.number() }));
    conn.reply(await conn.nextCommand(), { n: 5 });
    const value: { n: number } = await typed;
    expect(value.n).toBe(5);
  });
});

describe('QmpClient framing', () => {
  test('a message split across chunks (including inside a multi-byte character)', async () => {
    const { client, conn } = await setup();
    const p = client.execute('query-version');
    const cmd = await conn.nextCommand();
    const bytes = Buffer.from(`${JSON.stringify({ return: { package: 'Débian ✓' }, id: cmd.id })}\n`, 'utf8');
    const check = bytes.indexOf(Buffer.from('✓', 'utf8'));
    const cuts = [5, 17, check + 1, check + 2, bytes.length - 1];
    let prev = 0;
    for (const cut of cuts) {
      conn.sendRaw(bytes.subarray(prev, cut));
      prev = cut;
      await sleep(5);
    }
    conn.sendRaw(bytes.subarray(prev));
    await expect(p).resolves.toEqual({ package: 'Débian ✓' });
  });

  test('several messages in one chunk, CRLF line endings and blank lines', async () => {
    const { client, conn } = await setup();
    const seen: string[] = [];
    client.onEvent((e) => seen.push(e.event));
    const a = client.execute('a');
    const b = client.execute('b');
    const cmdA = await conn.nextCommand();
    const cmdB = await conn.nextCommand();
    conn.sendRaw(
      [
        JSON.stringify(event('E1')),
        JSON.stringify({ return: 1, id: cmdB.id }),
        '',
        JSON.stringify(event('E2')),
        JSON.stringify({ return: 2, id: cmdA.id }),
      ].join('\r\n') + '\r\n',
    );
    await expect(a).resolves.toBe(2);
    await expect(b).resolves.toBe(1);
    expect(seen).toEqual(['E1', 'E2']);
  });

  test('bad JSON → pending command rejects with QmpProtocolError and the connection closes', async () => {
    const { client, conn } = await setup();
    const closeReasons: Array<Error | undefined> = [];
    client.onClose((err) => closeReasons.push(err));
    const p = client.execute('query-jobs');
    await conn.nextCommand();
    conn.sendRaw('{"return": [}\n');
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpProtocolError);
    expect((err as Error).name).toBe('QmpProtocolError');
    expect((err as QmpProtocolError).raw).toBe('{"return": [}');
    expect(client.closed).toBe(true);
    expect(closeReasons).toHaveLength(1);
    expect(closeReasons[0]).toBe(err);
    await expect(client.execute('query-jobs')).rejects.toBeInstanceOf(QmpClosedError);
  });

  test('a message failing the wire schema → QmpProtocolError', async () => {
    const { client, conn } = await setup();
    const p = client.execute('query-jobs');
    await conn.nextCommand();
    conn.send({ event: 'JOB_STATUS_CHANGE', data: { id: 'j1' } }); // no timestamp
    await expect(p).rejects.toBeInstanceOf(QmpProtocolError);
    expect(client.closed).toBe(true);
  });

  test('an error reply missing desc → QmpProtocolError', async () => {
    const { client, conn } = await setup();
    const p = client.execute('query-jobs');
    const cmd = await conn.nextCommand();
    conn.send({ id: cmd.id, error: { class: 'GenericError' } });
    await expect(p).rejects.toBeInstanceOf(QmpProtocolError);
  });

  test('a reply with an unknown id is ignored', async () => {
    const { client, conn } = await setup();
    const p = client.execute('query-jobs');
    const cmd = await conn.nextCommand();
    conn.send({ return: 'stray', id: 'not-ours' });
    conn.reply(cmd, 'mine');
    await expect(p).resolves.toBe('mine');
    expect(client.closed).toBe(false);
  });
});

describe('QmpClient events', () => {
  test('onEvent delivers events until unsubscribed; listener exceptions are contained', async () => {
    const { client, conn } = await setup();
    const got: QmpEvent[] = [];
    client.onEvent(() => {
      throw new Error('buggy listener');
    });
    const unsubscribe = client.onEvent((e) => got.push(e));
    const first = client.waitForEvent((e) => e.event === 'E1', 1_000);
    conn.send(event('E1', { status: 'created', id: 'j1' }));
    await first;
    expect(got).toHaveLength(1);
    expect(got[0]).toEqual(event('E1', { status: 'created', id: 'j1' }));
    unsubscribe();
    const second = client.waitForEvent((e) => e.event === 'E2', 1_000);
    conn.send(event('E2'));
    await second;
    expect(got).toHaveLength(1);
  });

  test('waitForEvent resolves with the first matching event only', async () => {
    const { client, conn } = await setup();
    const p = client.waitForEvent((e) => e.event === 'JOB_STATUS_CHANGE' && e.data?.status === 'ready', 1_000);
    conn.send(event('JOB_STATUS_CHANGE', { status: 'created', id: 'j1' }));
    conn.send(event('JOB_STATUS_CHANGE', { status: 'running', id: 'j1' }));
    conn.send(event('JOB_STATUS_CHANGE', { status: 'ready', id: 'j1' }));
    const e = await p;
    expect(e.data).toEqual({ status: 'ready', id: 'j1' });
    expect(e.timestamp.seconds).toBe(1795629933);
  });

  test('waitForEvent timeout → QmpTimeoutError', async () => {
    const { client, conn } = await setup();
    const p = client.waitForEvent((e) => e.event === 'NEVER', 50);
    conn.send(event('OTHER'));
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpTimeoutError);
    expect((err as QmpTimeoutError).operation).toBe('waitForEvent');
  });

  test('waitForEvent rejects with the predicate error', async () => {
    const { client, conn } = await setup();
    const p = client.waitForEvent(() => {
      throw new Error('predicate bug');
    }, 1_000);
    conn.send(event('X'));
    await expect(p).rejects.toThrow('predicate bug');
  });
});

describe('QmpClient close', () => {
  test('server closing with a pending command → QmpClosedError; onClose gets the reason', async () => {
    const { client, conn } = await setup();
    const closed = new Promise<Error | undefined>((resolve) => client.onClose(resolve));
    const p = client.execute('block-job-complete', { device: 'j1' });
    const w = client.waitForEvent(() => true, 5_000).catch((e: unknown) => e);
    await conn.nextCommand();
    conn.socket.end();
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(QmpClosedError);
    expect((err as Error).name).toBe('QmpClosedError');
    expect((err as Error).message).toContain('block-job-complete');
    expect(await w).toBeInstanceOf(QmpClosedError);
    expect(await closed).toBeInstanceOf(QmpClosedError);
    expect(client.closed).toBe(true);
    await expect(client.execute('query-jobs')).rejects.toBeInstanceOf(QmpClosedError);
    await expect(client.waitForEvent(() => true, 100)).rejects.toBeInstanceOf(QmpClosedError);
    // Registering after the close still reports it.
    await expect(new Promise((resolve) => client.onClose(resolve))).resolves.toBeInstanceOf(QmpClosedError);
  });

  test('close() rejects pending commands, calls onClose without error, ends the socket; idempotent', async () => {
    const { client, conn } = await setup();
    const reasons: Array<Error | undefined> = [];
    client.onClose((err) => reasons.push(err));
    const p = client.execute('query-jobs').catch((e: unknown) => e);
    await conn.nextCommand();
    await client.close();
    expect(await p).toBeInstanceOf(QmpClosedError);
    expect(client.closed).toBe(true);
    expect(reasons).toEqual([undefined]);
    await conn.closed; // server saw the socket close
    await client.close();
    expect(reasons).toEqual([undefined]);
  });
});

describe('schemas', () => {
  const base = { filename: '/d/base.qcow2', format: 'qcow2', 'virtual-size': 16777216 };

  test('flattenImageChain lists filenames top → base and decodes json: pseudo-filenames', () => {
    // Shape of QEMU 7.2 query-block for an overlay whose header has a relative backing path.
    const top = {
      'backing-image': { ...base, 'dirty-flag': false },
      'backing-filename-format': 'qcow2',
      'virtual-size': 16777216,
      filename:
        'json:{"backing": {"driver": "qcow2", "file": {"driver": "file", "filename": "/d/base.qcow2"}}, "driver": "qcow2", "file": {"driver": "file", "filename": "/d/top.qcow2"}}',
      format: 'qcow2',
      'full-backing-filename': '/d/base.qcow2',
      'backing-filename': 'base.qcow2',
      'format-specific': { type: 'qcow2', data: { compat: '1.1' } },
    };
    const image = imageInfoSchema.parse(top);
    expect(image['format-specific']).toEqual({ type: 'qcow2', data: { compat: '1.1' } }); // extras kept
    expect(flattenImageChain(image)).toEqual(['/d/top.qcow2', '/d/base.qcow2']);
  });

  test('imageInfoSchema is recursive and requires typed fields at every level', () => {
    const three = { ...base, filename: '/d/c', 'backing-image': { ...base, filename: '/d/b', 'backing-image': base } };
    expect(flattenImageChain(imageInfoSchema.parse(three))).toEqual(['/d/c', '/d/b', '/d/base.qcow2']);
    const broken = { ...base, 'backing-image': { ...base, filename: 42 } };
    expect(imageInfoSchema.safeParse(broken).success).toBe(false);
  });

  test('resolveImageFilename', () => {
    expect(resolveImageFilename('/plain/path.qcow2')).toBe('/plain/path.qcow2');
    expect(resolveImageFilename('json:{"driver":"raw","file":{"driver":"qcow2","file":{"filename":"/x"}}}')).toBe('/x');
    expect(resolveImageFilename('json:{"driver":"qcow2","file.filename":"/y"}')).toBe('/y');
    expect(resolveImageFilename('json:{not json')).toBe('json:{not json');
    expect(resolveImageFilename('json:{"driver":"nbd"}')).toBe('json:{"driver":"nbd"}');
    // A blkdebug filter between format and file (QEMU 7.2, the lab's blkdebug option) names its child `image`.
    expect(
      resolveImageFilename(
        'json:{"driver": "qcow2", "file": {"inject-error.0.event": "write_aio", "image": {"driver": "file", "filename": "/z"}, "driver": "blkdebug"}}',
      ),
    ).toBe('/z');
  });

  test('resolveImageFilename follows a `file` that names a node through the node list', () => {
    const nodes = queryNamedBlockNodesSchema.parse(
      [
        ['f-top', 'file', '/d/top.qcow2'],
        ['q-top', 'qcow2', 'json:{"backing": "q-base", "driver": "qcow2", "file": "f-top"}'],
        ['loop', 'qcow2', 'json:{"driver": "qcow2", "file": "loop"}'],
      ].map(([name, drv, file]) => ({
        'node-name': name,
        drv,
        file,
        backing_file_depth: 0,
        ro: false,
        image: { ...base, filename: file },
      })),
    );
    const nodeFiles = nodeFilesOf(nodes);
    const top = 'json:{"backing": "q-base", "driver": "qcow2", "file": "f-top"}';
    expect(resolveImageFilename(top, nodeFiles)).toBe('/d/top.qcow2');
    expect(resolveImageFilename(top)).toBe(top); // without the node list: unchanged
    expect(resolveImageFilename('json:{"driver": "qcow2", "file": "q-top"}', nodeFiles)).toBe('/d/top.qcow2');
    expect(resolveImageFilename('json:{"driver": "qcow2", "file": "nope"}', nodeFiles)).toBe(
      'json:{"driver": "qcow2", "file": "nope"}',
    );
    expect(resolveImageFilename('json:{"driver": "qcow2", "file": "loop"}', nodeFiles)).toBe(
      'json:{"driver": "qcow2", "file": "loop"}',
    );
    const image = imageInfoSchema.parse({ ...base, filename: top, 'backing-image': base });
    expect(flattenImageChain(image, nodeFiles)).toEqual(['/d/top.qcow2', '/d/base.qcow2']);
  });

  test('resolveImageFilename follows 16 levels of nesting and no more; a json: null is left as it is', () => {
    /** `levels` objects, each the `file` of the one above, the innermost naming /x. */
    const nested = (levels: number): string => {
      let options: object = { driver: 'file', filename: '/x' };
      for (let i = 1; i < levels; i++) options = { driver: 'raw', file: options };
      return `json:${JSON.stringify(options)}`;
    };
    expect(resolveImageFilename(nested(16))).toBe('/x');
    expect(resolveImageFilename(nested(17))).toBe(nested(17));
    expect(resolveImageFilename('json:null')).toBe('json:null');
  });

  test('deviceIdOf: the -device id from the QOM path, or a legacy drive name', () => {
    const block = (device: string, qdev?: string) =>
      blockInfoSchema.parse({ device, ...(qdev === undefined ? {} : { qdev }) });
    expect(deviceIdOf(block('', '/machine/peripheral/disk0/virtio-backend'))).toBe('disk0');
    expect(deviceIdOf(block('drive0', '/machine/peripheral-anon/device[0]'))).toBe('drive0');
    expect(deviceIdOf(block('', '/machine/peripheral-anon/device[0]/virtio-backend'))).toBeUndefined();
    expect(deviceIdOf(block(''))).toBeUndefined();
  });
});

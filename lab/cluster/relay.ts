/**
 * A byte relay between two stream endpoints, each `HOST:PORT` or `unix:PATH`:
 * `node --import tsx lab/cluster/relay.ts --listen unix:/run/x.sock --to 10.77.1.1:7233`.
 * Unix sockets cross network namespaces, so one relay inside the core namespace (unix socket to
 * the frontend) and one in the root namespace (127.0.0.1 to that socket) let a client outside
 * reach the frontend without anything listening outside loopback. TLS passes through untouched.
 */
import { rmSync } from 'node:fs';
import * as net from 'node:net';

type Endpoint = { path: string } | { host: string; port: number };

export function parseEndpoint(spec: string): Endpoint {
  if (spec.startsWith('unix:')) return { path: spec.slice('unix:'.length) };
  const i = spec.lastIndexOf(':');
  const port = Number(spec.slice(i + 1));
  if (i < 1 || !Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`bad endpoint: ${spec}`);
  return { host: spec.slice(0, i), port };
}

/** Listens on `listen` and pipes every connection to a new connection to `to`. */
export function startRelay(listen: string, to: string): Promise<net.Server> {
  const from = parseEndpoint(listen);
  const target = parseEndpoint(to);
  if ('path' in from) rmSync(from.path, { force: true });
  const server = net.createServer((inbound) => {
    const outbound = net.connect(target);
    inbound.pipe(outbound).pipe(inbound);
    const end = () => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.on('error', end).on('close', end);
    outbound.on('error', end).on('close', end);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    if ('path' in from) server.listen(from.path, () => resolve(server));
    else server.listen(from.port, from.host, () => resolve(server));
  });
}

if (require.main === module) {
  const arg = (flag: string) => {
    const i = process.argv.indexOf(flag);
    if (i < 0 || !process.argv[i + 1]) throw new Error(`relay: ${flag} is required`);
    return process.argv[i + 1];
  };
  startRelay(arg('--listen'), arg('--to')).then(
    () => console.log(`relay ${arg('--listen')} -> ${arg('--to')}`),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(0));
}

import { mkdirSync, readFileSync } from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';

import { Client, Connection } from '@temporalio/client';

import { freePort } from '../devserver/free-port';
import { temporalBin } from '../devserver/temporal-bin';
import { asSetupError, lastLine, SetupError } from '../setup-error';
import { type CertPair, type ClusterCerts, ensureClusterCerts, FRONTEND_TLS_NAME, tlsEnv } from './certs';
import { type ClusterNetwork, CORE_IP, createClusterNetwork, deleteClusterNetwork, inNetns, runPrefix } from './netns';
import { ClusterPostgres } from './postgres';
import { type ClusterProcess, startProcess, waitFor } from './process';
import { startRelay } from './relay';
import {
  FRONTEND_PORT,
  runCliScript,
  SERVICE_NAMES,
  type ServiceContext,
  type ServiceName,
  setupSchema,
  startService,
  temporalServerBinDir,
} from './temporal-services';
import { startClusterWorker } from './workers';

export interface ClusterOptions {
  /**
   * Everything of this cluster lives under it (certificates, logs, each host's storage and run
   * dir) but PostgreSQL's directory, which the postgres user must reach: `postgresDir(dir)`.
   */
  dir: string;
  hostIds: string[];
  engines: number;
  logLevel?: string;
}

export interface ClusterHost {
  hostId: string;
  netns: string;
  ip: string;
  storageRoot: string;
  runDir: string;
  agent?: ClusterProcess;
}

const NAMESPACE = 'default';
/** The frontend as the workers in the namespaces reach it. */
export const FRONTEND_ADDRESS = `${CORE_IP}:${FRONTEND_PORT}`;

/**
 * The production topology on one machine (README, "The cluster"): PostgreSQL, the Temporal
 * services as separate processes with mTLS on the frontend, engine workers in the core network
 * namespace, and each hypervisor host in a namespace of its own with its own agent. Outside the
 * namespaces only a relay on 127.0.0.1 listens (`address`), for the CLI, tests and the UI.
 */
export class Cluster {
  readonly namespace = NAMESPACE;
  readonly services = new Map<ServiceName, ClusterProcess>();
  readonly engines: (ClusterProcess | undefined)[] = [];
  readonly hosts = new Map<string, ClusterHost>();
  net!: ClusterNetwork;
  pg!: ClusterPostgres;
  certs!: ClusterCerts;
  /** The frontend through the relay, on 127.0.0.1 of the root namespace. */
  address = '';
  client!: Client;
  connection!: Connection;
  private ctx!: ServiceContext;
  private coreRelay?: ClusterProcess;
  private rootRelay?: net.Server;
  private readonly logDir: string;
  private readonly startupRestarts = new Map<ServiceName, number>();

  constructor(readonly opts: ClusterOptions) {
    this.logDir = path.join(opts.dir, 'logs');
  }

  static async start(opts: ClusterOptions, onStep: (s: string) => void = () => undefined): Promise<Cluster> {
    const cluster = new Cluster(opts);
    try {
      await cluster.up(onStep);
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  private async up(onStep: (s: string) => void): Promise<void> {
    const { dir, hostIds } = this.opts;
    mkdirSync(dir, { recursive: true });
    const binDir = temporalServerBinDir();
    try {
      this.net = createClusterNetwork(runPrefix(), hostIds);
    } catch (err) {
      throw (
        asSetupError(err) ??
        new SetupError(`creating the network namespaces failed (${lastLine(err)}): the cluster needs root`, {
          cause: err,
        })
      );
    }
    onStep(
      `network: core ${this.net.coreNetns} (${CORE_IP}), hosts ${this.net.hosts.map((h) => `${h.netns} (${h.ip})`).join(', ')}`,
    );
    this.certs = ensureClusterCerts(path.join(dir, 'tls'), CORE_IP, hostIds);
    this.pg = new ClusterPostgres(dir, this.net.coreNetns);
    await this.pg.start();
    onStep(`postgresql: ${this.pg.address} in ${this.net.coreNetns}, data ${this.pg.dataDir}`);
    this.ctx = {
      binDir,
      coreNetns: this.net.coreNetns,
      bindIp: CORE_IP,
      tlsDir: this.certs.dir,
      logDir: this.logDir,
      logLevel: this.opts.logLevel ?? 'warn',
    };
    await setupSchema(this.ctx).catch((err: unknown) => {
      throw new SetupError(`deploy/temporal/setup-schema.sh failed: ${lastLine(err)}`, { cause: err });
    });
    onStep('schema: temporal and temporal_visibility at the server version');
    for (const s of SERVICE_NAMES) this.services.set(s, startService(this.ctx, s));
    await this.startRelays();
    await waitFor(
      'the frontend serving',
      async () => {
        this.restartExitedServices(onStep);
        await runCliScript('healthcheck.sh', { ...this.cliEnv(), TEMPORAL_NAMESPACE: 'temporal-system' }, 20_000);
        return true;
      },
      180_000,
    ).catch((err: unknown) => {
      if (err instanceof SetupError) throw err;
      throw new SetupError(`the Temporal frontend did not serve within 180 s: see the logs in ${this.logDir}`, {
        cause: err,
      });
    });
    onStep(`temporal: ${SERVICE_NAMES.join(', ')} on ${CORE_IP}; frontend ${FRONTEND_ADDRESS} (mTLS)`);
    const namespace = await runCliScript('setup-namespace.sh', this.cliEnv()).catch((err: unknown) => {
      throw new SetupError(`deploy/temporal/setup-namespace.sh failed: ${lastLine(err)}`, { cause: err });
    });
    onStep(namespace.trim());
    await this.waitHealthy();
    this.connection = await Connection.connect(this.connectionOptions(this.certs.cli));
    this.client = new Client({ connection: this.connection, namespace: NAMESPACE });
    for (let i = 0; i < this.opts.engines; i++) await this.startEngine(i);
    onStep(`engine workers: ${this.opts.engines} in ${this.net.coreNetns}`);
    for (const h of this.net.hosts) {
      const hostDir = path.join(dir, 'hosts', h.hostId);
      const host: ClusterHost = {
        hostId: h.hostId,
        netns: h.netns,
        ip: h.ip,
        storageRoot: path.join(hostDir, 'storage'),
        runDir: path.join(hostDir, 'run'),
      };
      this.hosts.set(h.hostId, host);
      await this.startHost(h.hostId);
      onStep(`host ${h.hostId}: ${h.netns} (${h.ip}), storage ${host.storageRoot}, run ${host.runDir}`);
    }
  }

  /** The client options for the frontend through the relay, showing `cert`. */
  connectionOptions(cert: CertPair) {
    return {
      address: this.address,
      tls: {
        serverNameOverride: FRONTEND_TLS_NAME,
        serverRootCACertificate: readFileSync(this.certs.ca),
        clientCertPair: { crt: readFileSync(cert.cert), key: readFileSync(cert.key) },
      },
    };
  }

  /** The Temporal CLI's environment for this cluster (PATH with the pinned CLI, address, mTLS). */
  cliEnv(cert: CertPair = this.certs.cli): Record<string, string> {
    return {
      PATH: `${path.dirname(temporalBin())}:${process.env.PATH ?? ''}`,
      TEMPORAL_ADDRESS: this.address,
      TEMPORAL_NAMESPACE: NAMESPACE,
      ...tlsEnv(this.certs, cert),
    };
  }

  /** deploy/temporal/healthcheck.sh until it passes: the frontend serves and the database answers. */
  async waitHealthy(timeoutMs = 180_000): Promise<void> {
    await waitFor(
      'the cluster healthy',
      async () => {
        await runCliScript('healthcheck.sh', this.cliEnv(), 20_000);
        return true;
      },
      timeoutMs,
    );
  }

  async healthy(): Promise<boolean> {
    return runCliScript('healthcheck.sh', this.cliEnv(), 20_000).then(
      () => true,
      () => false,
    );
  }

  /**
   * Services started together on a new database race to write the cluster's metadata, and the
   * loser exits ("SaveClusterMetadata encountered version mismatch"). A deployment's supervisor
   * starts it again (compose: `restart: unless-stopped`); so does this, during start-up only.
   */
  private restartExitedServices(onStep: (s: string) => void): void {
    for (const [service, p] of this.services) {
      if (p.child.exitCode === null && p.child.signalCode === null) continue;
      const restarts = (this.startupRestarts.get(service) ?? 0) + 1;
      if (restarts > 5) throw new SetupError(`${p.name} keeps exiting during start-up: see ${p.logFile}`);
      this.startupRestarts.set(service, restarts);
      onStep(`${p.name} exited during start-up (see ${p.logFile}); started again`);
      this.startService(service);
    }
  }

  startService(service: ServiceName): void {
    this.services.set(service, startService(this.ctx, service));
  }

  async startEngine(i: number): Promise<void> {
    this.engines[i] = await startClusterWorker({
      ...this.workerCommon(this.net.coreNetns, this.certs.engine),
      name: `engine-${i + 1}`,
      args: ['--role', 'engine'],
      logFile: path.join(this.logDir, `engine-${i + 1}.log`),
      taskQueue: 'live-merge-engine',
    });
  }

  /** The host's agent in its namespace; `cert` defaults to the host's own certificate. */
  async startHost(hostId: string, cert?: CertPair): Promise<void> {
    const host = this.hosts.get(hostId);
    if (!host) throw new Error(`no host ${hostId} in this cluster`);
    host.agent = await startClusterWorker({
      ...this.workerCommon(host.netns, cert ?? this.certs.host(hostId)),
      name: `host agent ${hostId}`,
      args: ['--role', 'host', '--host-id', hostId, '--storage-root', host.storageRoot, '--run-dir', host.runDir],
      logFile: path.join(this.logDir, `host-${hostId}.log`),
      taskQueue: `live-merge-host-${hostId}`,
    });
  }

  /** Every process this cluster started, by name, with its pid (make cluster's state file). */
  pids(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [n, p] of this.services) out[`temporal ${n}`] = p.pid;
    this.engines.forEach((p, i) => p && (out[`engine-${i + 1}`] = p.pid));
    for (const [h, host] of this.hosts) if (host.agent) out[`host agent ${h}`] = host.agent.pid;
    if (this.coreRelay) out['core relay'] = this.coreRelay.pid;
    const pg = this.pg?.pid();
    if (pg) out.postgresql = pg;
    return out;
  }

  /** Stops everything it started, by pid, then PostgreSQL, then deletes the namespaces. */
  async stop(): Promise<void> {
    const settle = (ps: (ClusterProcess | undefined)[]) => Promise.allSettled(ps.map((p) => p?.stop()));
    await settle([...this.hosts.values()].map((h) => h.agent));
    await settle(this.engines);
    await this.connection?.close().catch(() => undefined);
    await settle([...this.services.values()]);
    await this.coreRelay?.stop();
    await new Promise((r) => (this.rootRelay ? this.rootRelay.close(r) : r(undefined)));
    await this.pg?.stop('fast').catch(() => undefined);
    if (this.net) deleteClusterNetwork(this.net);
  }

  private workerCommon(netns: string, cert: CertPair) {
    const common = { address: FRONTEND_ADDRESS, namespace: NAMESPACE, certs: this.certs, client: this.client };
    return { ...common, netns, cert };
  }

  private async startRelays(): Promise<void> {
    const socket = path.join(this.opts.dir, 'frontend.sock');
    const relay = path.join(__dirname, 'relay.ts');
    this.coreRelay = startProcess(
      'core relay',
      inNetns(this.net.coreNetns, [
        process.execPath,
        '--import',
        'tsx',
        relay,
        '--listen',
        `unix:${socket}`,
        '--to',
        FRONTEND_ADDRESS,
      ]),
      { logFile: path.join(this.logDir, 'relay.log'), cwd: path.resolve(__dirname, '../..') },
    );
    const port = await freePort();
    this.rootRelay = await startRelay(`127.0.0.1:${port}`, `unix:${socket}`);
    this.address = `127.0.0.1:${port}`;
  }
}

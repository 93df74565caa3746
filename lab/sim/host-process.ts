/**
 * The simulated busy host's agent in a process of its own (`node --import tsx lab/sim/host-process.ts
 * <plan JSON>`), so a benchmark measures the agent's memory alone. It answers its parent over the
 * IPC channel: `longJobs` and `jobEndToCheckMs` as HostView has them; `stop` shuts it down.
 */
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { z } from 'zod';

import { startSimHost } from './busy-host';

const argsSchema = z.object({
  address: z.string().min(1),
  namespace: z.string().min(1),
  plan: z.object({
    hostId: z.string().min(1),
    storageRoot: z.string().min(1),
    merges: z.number().int().min(1),
    jobSeconds: z.number().positive(),
    timeScale: z.number().positive(),
    probePickupTimeoutSeconds: z.number().int().min(1).optional(),
  }),
});
const requestSchema = z.object({
  id: z.number(),
  ask: z.enum(['longJobs', 'jobEndToCheckMs', 'releaseLongJobs', 'stop']),
});

async function main(): Promise<void> {
  const args = argsSchema.parse(JSON.parse(process.argv[2] ?? '{}'));
  // Hundreds of merges: only what goes wrong is worth a line.
  Runtime.install({ shutdownSignals: [], logger: new DefaultLogger('WARN') });
  const connection = await NativeConnection.connect({ address: args.address });
  const host = await startSimHost(connection, args.namespace, args.plan);
  const running = host.agent.run();
  process.on('message', (raw) => {
    const request = requestSchema.parse(raw);
    const answer = async (): Promise<unknown> => {
      if (request.ask === 'longJobs') return host.longJobs();
      if (request.ask === 'jobEndToCheckMs') return host.jobEndToCheckMs();
      if (request.ask === 'releaseLongJobs') return host.releaseLongJobs().then(() => 'released');
      host.agent.shutdown();
      await running;
      await host.agent.close();
      await connection.close();
      return 'stopped';
    };
    void answer().then((value) =>
      process.send?.({ id: request.id, value }, () => {
        if (request.ask === 'stop') process.disconnect();
      }),
    );
  });
  process.send?.({ id: 0, value: 'ready' });
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

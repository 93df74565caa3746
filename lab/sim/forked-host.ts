import { fork } from 'node:child_process';
import * as path from 'node:path';

import { z } from 'zod';

import type { BusyHostPlan, HostView } from './busy-host';

export interface ForkedHost extends HostView {
  pid: number;
  /** Shuts the agent down (its running activities end first) and waits for the process to exit. */
  stop(): Promise<void>;
}

const replySchema = z.object({ id: z.number(), value: z.unknown() });
const longJobsSchema = z.object({ started: z.number(), ended: z.number() });

/** Starts lab/sim/host-process.ts for `plan` and resolves once its agent polls. */
export async function forkSimHost(address: string, namespace: string, plan: BusyHostPlan): Promise<ForkedHost> {
  const child = fork(path.join(__dirname, 'host-process.ts'), [JSON.stringify({ address, namespace, plan })], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const waiting = new Map<number, (value: unknown) => void>();
  child.on('message', (raw) => {
    const reply = replySchema.parse(raw);
    waiting.get(reply.id)?.(reply.value);
    waiting.delete(reply.id);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let next = 1;
  const ask = (what: 'longJobs' | 'jobEndToCheckMs' | 'releaseLongJobs' | 'stop'): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const id = next++;
      waiting.set(id, resolve);
      child.send({ id, ask: what }, (err) => err && reject(err));
    });
  await Promise.race([
    new Promise<void>((resolve) => waiting.set(0, () => resolve())),
    exited.then(() => {
      throw new Error('the simulated host agent exited before it was ready');
    }),
  ]);
  return {
    pid: child.pid ?? 0,
    longJobs: async () => longJobsSchema.parse(await ask('longJobs')),
    jobEndToCheckMs: async () => z.record(z.string(), z.number()).parse(await ask('jobEndToCheckMs')),
    releaseLongJobs: async () => void (await ask('releaseLongJobs')),
    async stop() {
      if (child.exitCode === null) await ask('stop');
      await exited;
    },
  };
}

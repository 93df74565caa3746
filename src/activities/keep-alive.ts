import { Context } from '@temporalio/activity';

/**
 * Heartbeats every second while a short host step runs, so a host agent that dies mid-step is
 * noticed by the heartbeat timeout within seconds, and a slow step (a large unlink on slow
 * storage) is not cut off by a tight start-to-close timeout. A local activity has no heartbeat:
 * its workflow task's timeout notices a dead agent instead.
 */
export function keepAlive<A extends unknown[], R>(step: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return async (...args: A) => {
    const ctx = Context.current();
    if (ctx.info.isLocal) return step(...args);
    const timer = setInterval(() => ctx.heartbeat(), 1000);
    try {
      return await step(...args);
    } finally {
      clearInterval(timer);
    }
  };
}

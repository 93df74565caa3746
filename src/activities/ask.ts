import { log } from '@temporalio/activity';

/**
 * Asks QEMU for one thing about a block job; true when QEMU took it. A refusal (or a request lost
 * on the way) is logged and false: the job list read on the wait's next turn tells whether to ask
 * again.
 */
export async function ask(what: string, jobId: string, request: () => Promise<void>): Promise<boolean> {
  try {
    await request();
    return true;
  } catch (err) {
    log.warn(`${what} refused`, { jobId, error: String(err) });
    return false;
  }
}

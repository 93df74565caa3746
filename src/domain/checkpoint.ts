import { z } from 'zod';

import { convergenceStateSchema } from './convergence';
import { speedStateSchema } from './speed';

/**
 * The block-job wait's heartbeat details: the job's last seen status and offset/len, and whether
 * the pivot was accepted. A retry on a restarted host agent resumes from it; progress readers
 * take the live offset/len from it.
 */
export const checkpointSchema = z.object({
  status: z.string(),
  offset: z.number(),
  len: z.number(),
  pivotRequested: z.boolean(),
  /** Whether the job copies faster than the guest dirties (absent before the first reading). */
  convergence: convergenceStateSchema.optional(),
  /**
   * Set once the wait cancelled the job because it did not converge (policy `fail`): a resumed
   * wait never pivots, waits for the job's end and fails the disk as NotConverging.
   */
  cancelledNotConverging: z.boolean().optional(),
  /** The adaptive speed's controller (domain/speed.ts); absent in the fixed mode. */
  speed: speedStateSchema.optional(),
});
export type Checkpoint = z.infer<typeof checkpointSchema>;

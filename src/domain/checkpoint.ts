import { z } from 'zod';

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
});
export type Checkpoint = z.infer<typeof checkpointSchema>;

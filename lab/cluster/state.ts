import * as path from 'node:path';

import { z } from 'zod';

/** make cluster's state file: its own pid, what it started, and the namespaces (make cluster-down reads it). */
export const STATE_FILE = path.resolve(__dirname, '../../.lab/cluster-state.json');

export const clusterStateSchema = z.object({
  pid: z.number().int().positive(),
  dir: z.string(),
  pids: z.record(z.string(), z.number().int().positive()),
  netns: z.array(z.string()),
});
export type ClusterState = z.infer<typeof clusterStateSchema>;

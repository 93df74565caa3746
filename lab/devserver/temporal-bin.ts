import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

import { SetupError } from '../setup-error';

/**
 * The pinned Temporal CLI: `LIVE_MERGE_TEMPORAL_BIN` when set, else what scripts/ensure-temporal.sh
 * prints (the cached build, made on first use).
 */
export function temporalBin(): string {
  const fromEnv = process.env.LIVE_MERGE_TEMPORAL_BIN;
  if (fromEnv) return fromEnv;
  const script = path.resolve(__dirname, '../../scripts/ensure-temporal.sh');
  try {
    return execFileSync('bash', [script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  } catch (err) {
    // The script said why on stderr, above.
    throw new SetupError('the Temporal CLI is not built (scripts/ensure-temporal.sh failed): run make setup', {
      cause: err,
    });
  }
}

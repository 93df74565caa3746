import { execFile } from 'node:child_process';
import * as path from 'node:path';

import { temporalBin } from '../../lab/devserver/temporal-bin';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs the real `temporal` CLI against one server, as an argument array (no shell), with no
 * config file of the user's (`configDir/none.toml` does not exist), so only the flags count.
 */
let bin: string | undefined;

export function temporalCli(target: { address: string; namespace: string }, configDir: string) {
  bin ??= temporalBin();
  const cli = bin;
  return function temporal(...args: string[]): Promise<CliRun> {
    const full = [...args, '--address', target.address, '--namespace', target.namespace];
    return new Promise((resolve) => {
      execFile(
        cli,
        full,
        {
          timeout: 60_000,
          maxBuffer: 16 * 1024 * 1024,
          env: { ...process.env, TEMPORAL_CONFIG_FILE: path.join(configDir, 'none.toml') },
        },
        (err, stdout, stderr) =>
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
    });
  };
}

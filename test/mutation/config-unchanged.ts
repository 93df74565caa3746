/**
 * Whether a mutation set's StrykerJS options are those its record was made with: every option the
 * config file sets (after the base it spreads) against the options StrykerJS wrote into the record.
 * scripts/mutate-changed.sh asks this when stryker.config.json, the base of every set, changed since
 * a set's record: a change to another set's `mutate` list changes none of this set's results.
 * Usage: tsx test/mutation/config-unchanged.ts <config> <record>; exits 0 when unchanged, 1 when an
 * option differs (named on stderr).
 */
import { readFileSync } from 'node:fs';
import { isDeepStrictEqual } from 'node:util';

import { z } from 'zod';

import { readStrykerOptions } from './stryker-options';

const optionsSchema = z.record(z.string(), z.unknown());
const recordSchema = z.object({ config: optionsSchema });

async function main(): Promise<number> {
  const [configFile, recordFile] = process.argv.slice(2);
  if (!configFile || !recordFile) {
    console.error('usage: config-unchanged.ts <config> <record>');
    return 2;
  }
  const options = optionsSchema.parse(await readStrykerOptions(configFile));
  const recorded = recordSchema.parse(JSON.parse(readFileSync(recordFile, 'utf8'))).config;
  const changed = Object.keys(options).filter((key) => !isDeepStrictEqual(options[key], recorded[key]));
  for (const key of changed) console.error(`${configFile}: option ${key} is not the one ${recordFile} was made with`);
  return changed.length === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 2;
  },
);

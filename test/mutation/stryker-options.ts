import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

/** The options a StrykerJS config file sets: a JSON file as written, a module's default export. */
export async function readStrykerOptions(file: string): Promise<unknown> {
  if (file.endsWith('.json')) return JSON.parse(readFileSync(file, 'utf8'));
  const loaded = (await import(pathToFileURL(path.resolve(file)).href)) as { default: unknown };
  return loaded.default;
}

import { promises as fs } from 'node:fs';
import * as path from 'node:path';

import { dirOf, readName } from './image-names';
import { CorruptImageHeaderError, readImageRefs } from './qemu-img';

/** QEMU refuses chains deeper than this (block.c, `bdrv_backing_chain_depth`-like limits). */
const MAX_CHAIN_DEPTH = 64;

/**
 * The chain a stopped VM opens from `activePath`, read from the image headers as QEMU reads them
 * (image-names.ts): absolute paths, active first, base last. A backing that is no single local
 * file, a data file, a loop, or a chain deeper than QEMU's limit cannot be read as one chain of
 * volumes: CorruptImageHeaderError names the image.
 */
export async function readHeaderChain(activePath: string): Promise<string[]> {
  const chain = [path.resolve(activePath)];
  for (;;) {
    const image = chain[chain.length - 1];
    const refs = await readImageRefs(image);
    if (refs?.opaque !== undefined) throw new CorruptImageHeaderError(image, refs.opaque);
    if (refs?.dataFile !== undefined)
      throw new CorruptImageHeaderError(image, `an external data file (${refs.dataFile}) is not a volume of a chain`);
    if (refs?.backing === undefined) return chain;
    const { files, unresolved } = readName(refs.backing, dirOf(image));
    if (files.length !== 1 || unresolved.length > 0)
      throw new CorruptImageHeaderError(
        image,
        `backing ${JSON.stringify(refs.backing)} is not one local file${unresolved.length > 0 ? `: ${unresolved.join('; ')}` : ''}`,
      );
    const backing = await openedPath(files[0].path);
    if (chain.includes(backing)) throw new CorruptImageHeaderError(image, `backing ${backing} makes a loop`);
    if (chain.length >= MAX_CHAIN_DEPTH)
      throw new CorruptImageHeaderError(image, `a chain deeper than ${MAX_CHAIN_DEPTH} images`);
    chain.push(backing);
  }
}

/** The kernel resolves `..` after the symlinks before it: such a name is resolved through its directory's real path. */
async function openedPath(name: string): Promise<string> {
  if (!name.split('/').includes('..')) return path.resolve(name);
  return path.join(await fs.realpath(path.dirname(name)), path.basename(name));
}

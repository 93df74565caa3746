/** The chain a stopped VM opens, read from real qcow2 headers (storage/header-chain.ts). */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { readHeaderChain } from '../../src/storage/header-chain';
import { CorruptImageHeaderError } from '../../src/storage/qemu-img';

const run = promisify(execFile);
let dir: string;
const img = (name: string): string => path.join(dir, `${name}.qcow2`);
const create = (name: string, backing?: string): Promise<unknown> =>
  run('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    ...(backing === undefined ? [] : ['-b', backing, '-F', 'qcow2']),
    img(name),
    ...(backing === undefined ? ['1M'] : []),
  ]);
const rebase = (name: string, backing: string): Promise<unknown> =>
  run('qemu-img', ['rebase', '-q', '-u', '-f', 'qcow2', '-b', backing, '-F', 'qcow2', img(name)]);

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(tmpdir(), 'lm-header-chain-'));
});
afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

test('active first, base last, relative and absolute names alike', async () => {
  await create('a');
  await create('b', 'a.qcow2');
  await create('c', img('b'));
  expect(await readHeaderChain(img('c'))).toEqual([img('c'), img('b'), img('a')]);
  expect(await readHeaderChain(img('a'))).toEqual([img('a')]);
});

test('a `..` name goes through the real directory of the symlink before it, as the kernel resolves it', async () => {
  await fs.mkdir(path.join(dir, 'real', 'sub'), { recursive: true });
  await fs.symlink(path.join(dir, 'real', 'sub'), path.join(dir, 'link'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'real', 'base.qcow2'), '1M']);
  await create('top', 'link/../base.qcow2');
  expect(await readHeaderChain(img('top'))).toEqual([img('top'), path.join(dir, 'real', 'base.qcow2')]);
});

test('a loop, a missing backing, a network backing: CorruptImageHeaderError naming the image', async () => {
  await create('a');
  await create('b', 'a.qcow2');
  await rebase('a', 'b.qcow2');
  await expect(readHeaderChain(img('b'))).rejects.toThrow(/makes a loop/);
  await create('n');
  await rebase('n', 'nbd://127.0.0.1:1/x');
  const err = await readHeaderChain(img('n')).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(CorruptImageHeaderError);
  expect((err as Error).message).toMatch(/n\.qcow2.*not one local file.*nbd protocol/);
  await create('m');
  await rebase('m', 'gone.qcow2');
  await expect(readHeaderChain(img('m'))).rejects.toThrow(/ENOENT/);
});

test('a backing that opens no file, two files, or a file and storage elsewhere is not one local file', async () => {
  const refusal = async (backing: string): Promise<string> => {
    await create('x');
    await rebase('x', backing);
    const err = await readHeaderChain(img('x')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptImageHeaderError);
    return (err as Error).message;
  };
  expect(await refusal('null-co://')).toMatch(/backing "null-co:\/\/" is not one local file$/);
  const quorum = `json:${JSON.stringify({
    driver: 'quorum',
    'vote-threshold': 1,
    children: [
      { driver: 'file', filename: img('a') },
      { driver: 'file', filename: img('b') },
    ],
  })}`;
  expect(await refusal(quorum)).toMatch(/is not one local file$/);
  const blkverify = `json:${JSON.stringify({ driver: 'blkverify', test: { driver: 'file', filename: img('a') }, raw: { driver: 'nbd', host: 'h' } })}`;
  expect(await refusal(blkverify)).toMatch(
    /is not one local file: .*the nbd driver reaches storage that is no file of this host$/,
  );
});

test('a name through a symlinked directory, without `..`, is kept as written: QEMU opens it by that name', async () => {
  await fs.mkdir(path.join(dir, 'real'));
  await fs.symlink(path.join(dir, 'real'), path.join(dir, 'link'));
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'real', 'base.qcow2'), '1M']);
  await create('top', path.join(dir, 'link', 'base.qcow2'));
  await create('rel', 'link/base.qcow2');
  expect(await readHeaderChain(img('top'))).toEqual([img('top'), path.join(dir, 'link', 'base.qcow2')]);
  expect(await readHeaderChain(img('rel'))).toEqual([img('rel'), path.join(dir, 'link', 'base.qcow2')]);
});

test('a chain deeper than 64 images is refused; 64 are read', async () => {
  await create('l0');
  for (let i = 1; i < 64; i++) await create(`l${i}`, `l${i - 1}.qcow2`);
  expect(await readHeaderChain(img('l63'))).toHaveLength(64);
  await create('l64', 'l63.qcow2');
  await expect(readHeaderChain(img('l64'))).rejects.toThrow(/deeper than 64/);
});

test('an external data file is not a volume of a chain', async () => {
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${path.join(dir, 'd.raw')}`, img('x'), '1M']);
  await expect(readHeaderChain(img('x'))).rejects.toThrow(/external data file/);
});

test('a backing with several parts that are no local file names each of them', async () => {
  await create('x');
  const children = [
    { driver: 'nbd', host: 'h' },
    { driver: 'ssh', host: 'i', path: '/x' },
  ];
  await rebase('x', `json:${JSON.stringify({ driver: 'quorum', 'vote-threshold': 1, children })}`);
  await expect(readHeaderChain(img('x'))).rejects.toThrow(
    /: .*the nbd driver reaches storage that is no file of this host; .*the ssh driver reaches storage that is no file of this host$/,
  );
});

import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';

/**
 * A storage root of `images` qcow2 images spread over `dirs` disk directories, a mix of chains:
 * per directory, chains of `chainLength` volumes whose overlays name their backing relatively
 * (`v0001.qcow2`), some absolutely, and every tenth base is a linked clone of a template in another
 * directory (`../d0000/v0000.qcow2`). Made from a few `qemu-img create` templates whose backing
 * name is patched in place (same length), so 5,000 real qcow2 headers take a second, not a minute.
 */
export interface ImageTree {
  root: string;
  files: string[];
  /** A volume used as backing by images of other directories (a template's shared base). */
  sharedBase: string;
  /** A chain of one directory, base first, and the overlay above its top. */
  chain: string[];
}

const dirName = (d: number): string => `d${String(d).padStart(4, '0')}`;
const volName = (v: number): string => `v${String(v).padStart(4, '0')}.qcow2`;

export function makeImageTree(root: string, images: number, dirs: number, chainLength = 5): ImageTree {
  const tmpl = path.join(root, '.tmpl');
  mkdirSync(tmpl, { recursive: true });
  const imagesDir = path.join(root, 'images');
  const create = (file: string, backing?: string): Buffer => {
    const args = ['create', '-q', '-f', 'qcow2', ...(backing ? ['-u', '-b', backing, '-F', 'qcow2'] : []), file, '16M'];
    execFileSync('qemu-img', args);
    return readFileSync(file);
  };
  const base = create(path.join(tmpl, 'base.qcow2'));
  const rel = create(path.join(tmpl, 'rel.qcow2'), volName(0));
  const cross = create(path.join(tmpl, 'cross.qcow2'), `../${dirName(0)}/${volName(0)}`);
  const absName = (d: number, v: number): string => path.join(imagesDir, dirName(d), volName(v));
  const abs = create(path.join(tmpl, 'abs.qcow2'), absName(0, 0));
  const patched = (t: Buffer, name: string): Buffer => {
    const b = Buffer.from(t);
    const offset = Number(b.readBigUInt64BE(8));
    const size = b.readUInt32BE(16);
    if (Buffer.byteLength(name) !== size) throw new Error(`backing name ${name} is not ${size} bytes`);
    b.write(name, offset, 'utf8');
    return b;
  };
  const files: string[] = [];
  const perDir = Math.ceil(images / dirs);
  for (let d = 0; d < dirs && files.length < images; d++) {
    const dir = path.join(imagesDir, dirName(d));
    mkdirSync(dir, { recursive: true });
    for (let v = 0; v < perDir && files.length < images; v++) {
      const file = path.join(dir, volName(v));
      let content: Buffer;
      if (v % chainLength === 0) {
        content = d > 0 && v === 0 && d % 10 === 0 ? patched(cross, `../${dirName(0)}/${volName(0)}`) : base;
      } else if (v % 7 === 3) {
        content = patched(abs, absName(d, v - 1));
      } else {
        content = patched(rel, volName(v - 1));
      }
      writeFileSync(file, content);
      files.push(file);
    }
    // What else lives in a disk directory: a tombstone of a merged volume.
    writeFileSync(path.join(dir, '.v9999.merged.json'), '{}');
  }
  rmSync(tmpl, { recursive: true, force: true });
  return {
    root,
    files,
    sharedBase: absName(0, 0),
    // Disk 1's first chain (disk 0 holds the shared base), or disk 0's in a one-directory tree.
    chain: [0, 1, 2, 3, 4].map((v) => absName(dirs > 1 && images > perDir ? 1 : 0, v)).filter((f) => files.includes(f)),
  };
}

/**
 * What QEMU's block layer opens for a name an image holds (a backing file, a data file), read as
 * QEMU reads it (block.c: bdrv_make_absolute_filename, path_has_protocol, bdrv_find_protocol,
 * parse_json_filename), so a guard never compares names as text:
 * - a plain absolute name is that path; a relative one is appended to the image's directory as a
 *   string, `..` and all: the kernel resolves it after any symlink, as it does for QEMU;
 * - `proto:` before any `/` is a protocol: `file:`, `host_device:` and `host_cdrom:` name a path
 *   (a relative one opens against the opener's working directory, unknown here); `null-co://` and
 *   `null-aio://` open nothing; any other protocol (nbd, http, ssh, iscsi, rbd, gluster, nfs, fat,
 *   blkdebug, ...) is storage this host cannot tie to a file;
 * - `json:{...}` is a structured specification: its nodes are read as QEMU flattens them (dotted
 *   keys and nested objects alike); an explicit `backing` or `data-file` there replaces the header's.
 * Whatever cannot be read this way is `unresolved`, with the reason: a guard must refuse it.
 */

/** A file QEMU opens, and whether it goes on to open what that file's own header names. */
export interface OpenedFile {
  /** As QEMU passes it to open(2): absolute, not normalised. */
  path: string;
  followsBacking: boolean;
  followsDataFile: boolean;
}

export interface NameReading {
  files: OpenedFile[];
  /** Why some part of the name cannot be tied to a file here. */
  unresolved: string[];
}

const PATH_PROTOCOLS = new Set(['file', 'host_device', 'host_cdrom']);
const NO_FILE_PROTOCOLS = new Set(['null-co', 'null-aio']);
/** Drivers that open their children (nodes under `file`, `backing`, ...) and no storage of their own. */
const NODE_DRIVERS = new Set([
  'qcow2',
  'qcow',
  'raw',
  'qed',
  'vdi',
  'vpc',
  'vhdx',
  'parallels',
  'dmg',
  'cloop',
  'bochs',
  'luks',
  'throttle',
  'copy-on-read',
  'compress',
  'preallocate',
  'blkdebug',
  'blkverify',
  'blklogwrites',
  'quorum',
  'snapshot-access',
]);

/** Options that name a child node: a string there refers to a node by its node name. */
const CHILD_KEYS = new Set(['file', 'image', 'test', 'raw', 'log']);

/** The directory QEMU resolves an image's relative names against: its path up to the last `/`. */
export function dirOf(imagePath: string): string {
  return imagePath.slice(0, imagePath.lastIndexOf('/') + 1);
}

/** What QEMU opens for `name`, held by an image whose directory is `dir` (see `dirOf`). */
export function readName(name: string, dir: string): NameReading {
  const reading: NameReading = { files: [], unresolved: [] };
  if (name.startsWith('json:')) readJson(name.slice('json:'.length), name, reading);
  else readPlain(name, dir, reading);
  return reading;
}

/**
 * What QEMU opens for a qcow2 external data file name: the name as a file path, with no protocol
 * or json: reading (QEMU since the CVE-2024-4467 fix), and a relative one against the working
 * directory of the opener, not the image's directory. Older builds read prefixes here: any name
 * that is not a plain absolute path is therefore left unresolved.
 */
export function readDataFileName(name: string): NameReading {
  const reading: NameReading = { files: [], unresolved: [] };
  if (name.startsWith('/')) reading.files.push({ path: name, followsBacking: true, followsDataFile: true });
  else
    reading.unresolved.push(
      `${JSON.stringify(name)} is relative to the working directory of whichever process opens the image`,
    );
  return reading;
}

/** The protocol of a name: what precedes a `:` that comes before any `/` (path_has_protocol). */
export function protocolOf(name: string): string | undefined {
  const stop = name.search(/[:/]/);
  return stop >= 0 && name[stop] === ':' ? name.slice(0, stop) : undefined;
}

/** `dir` is undefined inside a json: spec, whose relative names open against the working directory. */
function readPlain(name: string, dir: string | undefined, reading: NameReading): void {
  const protocol = protocolOf(name);
  if (protocol === undefined) return openPath(name, dir, name, reading);
  if (PATH_PROTOCOLS.has(protocol)) return openPath(name.slice(protocol.length + 1), undefined, name, reading);
  if (NO_FILE_PROTOCOLS.has(protocol)) return;
  reading.unresolved.push(
    `${JSON.stringify(name)} is opened by QEMU's ${protocol} protocol, not as a file of this host`,
  );
}

function openPath(file: string, dir: string | undefined, name: string, reading: NameReading): void {
  if (file.startsWith('/')) reading.files.push({ path: file, followsBacking: true, followsDataFile: true });
  else if (dir !== undefined && file !== '')
    reading.files.push({ path: dir + file, followsBacking: true, followsDataFile: true });
  else
    reading.unresolved.push(
      `${JSON.stringify(name)} is relative to the working directory of whichever process opens the image`,
    );
}

type Tree = { [key: string]: Tree | string | number | boolean | null };

function readJson(text: string, name: string, reading: NameReading): void {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    reading.unresolved.push(`${JSON.stringify(name)} is a json: specification this guard cannot parse`);
    return;
  }
  const tree = isObject(value) ? crumple(value) : undefined;
  if (tree === undefined)
    reading.unresolved.push(`${JSON.stringify(name)} is a json: specification with keys QEMU would merge ambiguously`);
  else readNode(tree, name, reading, true);
}

/** Nested objects and dotted keys as one tree (QEMU flattens both to dotted keys); undefined on a clash. */
function crumple(value: Record<string, unknown>): Tree | undefined {
  const flat = new Map<string, string | number | boolean | null>();
  const flatten = (v: unknown, prefix: string): boolean => {
    if (isObject(v) || Array.isArray(v)) {
      for (const [k, child] of Object.entries(v))
        if (!flatten(child, prefix === '' ? k : `${prefix}.${k}`)) return false;
      return true;
    }
    if (flat.has(prefix)) return false;
    flat.set(prefix, v as string | number | boolean | null); // what JSON.parse leaves besides objects and arrays
    return true;
  };
  if (!flatten(value, '')) return undefined;
  const tree: Tree = {};
  for (const [key, v] of flat) {
    const parts = key.split('.');
    if (parts.some((p) => p === '')) return undefined; // QEMU's `..` escape of a literal dot
    let node = tree;
    for (const p of parts.slice(0, -1)) {
      const next = node[p] ?? (node[p] = {});
      if (!isObject(next)) return undefined;
      node = next as Tree;
    }
    const last = parts[parts.length - 1];
    if (last in node) return undefined;
    node[last] = v;
  }
  return tree;
}

/**
 * One node of a json: specification: a protocol node opens a file, any other opens its children.
 * `parsesFilename`: QEMU reads the node's `filename` for a protocol (a backing or `file` child);
 * its other children (a data file, quorum's, blkdebug's) take it literally since QEMU 7.2.13 and
 * as a protocol before, so a prefixed one is no file this guard can name.
 */
function readNode(node: Tree, name: string, reading: NameReading, parsesFilename: boolean): OpenedFile[] {
  const driver = node.driver;
  const unresolved = (why: string): OpenedFile[] => {
    reading.unresolved.push(`${JSON.stringify(name)}: ${why}`);
    return [];
  };
  if (driver !== undefined && typeof driver !== 'string') return unresolved('a driver that is not a name');
  if (driver !== undefined && PATH_PROTOCOLS.has(driver)) {
    if (typeof node.filename !== 'string') return unresolved(`a ${driver} node without a filename`);
    return opened(reading, () => openPath(node.filename as string, undefined, name, reading));
  }
  if (driver !== undefined && NO_FILE_PROTOCOLS.has(driver)) return [];
  if (driver !== undefined && !NODE_DRIVERS.has(driver))
    return unresolved(`the ${driver} driver reaches storage that is no file of this host`);
  const files: OpenedFile[] = [];
  for (const [key, child] of Object.entries(node)) {
    if (key === 'driver' || key === 'backing' || key === 'data-file') continue;
    // QEMU refuses `filename` beside `file`; read either way, it is counted.
    if (key === 'filename' && typeof child === 'string') {
      if (!parsesFilename && protocolOf(child) !== undefined)
        unresolved(`filename ${JSON.stringify(child)} is read literally by some QEMU builds, as a protocol by others`);
      else files.push(...opened(reading, () => readPlain(child, undefined, reading)));
    } else if (isObject(child)) files.push(...readNode(child as Tree, name, reading, key === 'file'));
    else if (typeof child === 'string' && child.includes('/'))
      unresolved(`option ${key} names ${JSON.stringify(child)}, which this guard does not read`);
    else if (CHILD_KEYS.has(key) || /^\d+$/.test(key))
      unresolved(
        typeof child === 'string'
          ? `option ${key} refers to a node by its name (${JSON.stringify(child)})`
          : `option ${key} holds ${JSON.stringify(child)} where QEMU expects a node`,
      );
  }
  // An explicit backing or data file replaces what the header of this node's file names.
  for (const [key, follows] of [
    ['backing', 'followsBacking'],
    ['data-file', 'followsDataFile'],
  ] as const) {
    if (!(key in node)) continue;
    for (const f of files) f[follows] = false;
    const child = node[key];
    if (isObject(child)) readNode(child as Tree, name, reading, key === 'backing');
    else if (child !== null) unresolved(`${key} refers to a node by its name (${JSON.stringify(child)})`);
  }
  return files;
}

/** The files `read` adds to the reading, also returned. */
function opened(reading: NameReading, read: () => void): OpenedFile[] {
  const before = reading.files.length;
  read();
  return reading.files.slice(before);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

import { XMLParser } from 'fast-xml-parser';
import { z } from 'zod';

/**
 * The disks of a domain as `virsh dumpxml` has them: each one's chain, active layer first, from
 * libvirt's nested `<backingStore index='N'>`, and the `<mirror>` of a running active commit.
 * libvirt's own view is the one that counts: a layer is addressed as `vda[N]` by its index.
 */

export interface DomainLayer {
  path: string;
  /** libvirt's index of the layer in the chain (`vda[N]`). */
  index: number;
}

export interface DomainDisk {
  /** `<target dev>`, e.g. `vda`: names the disk in libvirt's block calls. */
  target: string;
  /** `<serial>` when set: the disk's id for the product (its image dir); else the target. */
  serial?: string;
  layers: DomainLayer[];
  /** Set while an active commit (or other mirror) runs: its job kind and whether it is ready. */
  mirror?: { job: string; ready: boolean };
}

const indexSchema = z.coerce.number().int().min(0);
/** A network disk's or layer's source has a protocol and a name instead of a file. */
const sourceSchema = z.looseObject({ file: z.string().min(1).optional(), index: indexSchema.optional() });

type Source = z.infer<typeof sourceSchema>;
type BackingStore = '' | { source?: Source; index?: number; backingStore?: BackingStore };
const backingStoreSchema: z.ZodType<BackingStore> = z.lazy(() =>
  z.union([
    z.literal(''),
    z.looseObject({
      source: sourceSchema.optional(),
      index: indexSchema.optional(),
      backingStore: backingStoreSchema.optional(),
    }),
  ]),
);

const diskSchema = z.looseObject({
  type: z.string(),
  device: z.string().optional(),
  source: sourceSchema.optional(),
  backingStore: backingStoreSchema.optional(),
  target: z.looseObject({ dev: z.string().min(1) }),
  serial: z.union([z.string(), z.number()]).optional(),
  mirror: z.looseObject({ job: z.string().optional(), ready: z.string().optional() }).optional(),
});

const domainSchema = z.looseObject({
  domain: z.looseObject({
    name: z.union([z.string(), z.number()]),
    devices: z.looseObject({ disk: z.array(diskSchema).optional() }),
  }),
});

export class DomainXmlError extends Error {
  override name = 'DomainXmlError';
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '',
  // Attribute and text values stay strings (a serial of digits too); zod converts what it needs.
  parseAttributeValue: false,
  parseTagValue: false,
  isArray: (name, jpath) => jpath === 'domain.devices.disk',
});

/** The file-backed disks of a `virsh dumpxml` document (cdroms and network disks are left out). */
export function parseDomainDisks(xml: string): DomainDisk[] {
  const parsed = domainSchema.safeParse(parser.parse(xml));
  if (!parsed.success) throw new DomainXmlError(`unexpected domain XML: ${parsed.error.message}`);
  const disks: DomainDisk[] = [];
  for (const d of parsed.data.domain.devices.disk ?? []) {
    if (d.type !== 'file' || (d.device ?? 'disk') !== 'disk' || d.source?.file === undefined) continue;
    const layers: DomainLayer[] = [{ path: d.source.file, index: d.source.index ?? 0 }];
    // The innermost <backingStore/> is empty: the chain ends there.
    for (let next = d.backingStore; next !== undefined && next !== '' && next.source; next = next.backingStore) {
      // A chain read in part would name the wrong base: a layer that is no file is refused.
      if (next.source.file === undefined)
        throw new DomainXmlError(`a layer of ${d.target.dev} is no file: ${JSON.stringify(next.source)}`);
      if (next.index === undefined)
        throw new DomainXmlError(`layer ${next.source.file} of ${d.target.dev} has no index`);
      layers.push({ path: next.source.file, index: next.index });
    }
    disks.push({
      target: d.target.dev,
      ...(d.serial === undefined || d.serial === '' ? {} : { serial: String(d.serial) }),
      layers,
      ...(d.mirror ? { mirror: { job: d.mirror.job ?? 'copy', ready: d.mirror.ready === 'yes' } } : {}),
    });
  }
  return disks;
}

/** The disk's id for the product: its `<serial>`, else its target. */
export function diskIdOf(d: DomainDisk): string {
  return d.serial ?? d.target;
}

/** `vda[3]`: how libvirt's block calls name one layer of a disk. */
export function layerName(target: string, index: number): string {
  return `${target}[${index}]`;
}

/** The target and index of a layer name, or undefined for anything else. */
export function parseLayerName(name: string): { target: string; index: number } | undefined {
  const m = /^([a-z][a-z0-9]*)\[(\d+)\]$/.exec(name);
  return m ? { target: m[1], index: Number(m[2]) } : undefined;
}

/**
 * The domain XML with disk `diskId` (its serial, else its target) starting from `to`: its
 * `<source file>` replaced and its `<backingStore>` dropped, so that libvirt reads the chain below
 * `to` from the image headers at the next start, as QEMU opens it. Refuses (DomainXmlError) a disk
 * that is missing, or not a single file-backed disk, or an edit the parsed result does not confirm.
 */
export function withDiskSource(xml: string, diskId: string, to: string): string {
  const mine = definedDiskBlocks(xml).filter((b) => diskIdOf(b.disk) === diskId);
  if (mine.length !== 1) throw new DomainXmlError(`the domain has ${mine.length} file-backed disks ${diskId}, not one`);
  const { block, index } = mine[0];
  const edited = withoutBacking(block).replace(/(<source\b[^>]*\bfile=)(['"])[^'"]*\2/, `$1'${escapeAttribute(to)}'`);
  const after = diskIn(edited);
  if (after?.layers.length !== 1 || after.layers[0].path !== to || edited.includes('<backingStore'))
    throw new DomainXmlError(`disk ${diskId} does not start from ${to} after the edit`);
  return xml.slice(0, index) + edited + xml.slice(index + block.length);
}

/**
 * The file-backed disks of a domain's inactive definition, each read from its `<source>` alone:
 * an explicit `<backingStore>` there has no indexes, and the chain below is the image headers'.
 */
export function parseDefinedDisks(xml: string): DomainDisk[] {
  return definedDiskBlocks(xml).map((b) => b.disk);
}

function definedDiskBlocks(xml: string): { block: string; index: number; disk: DomainDisk }[] {
  return [...xml.matchAll(/<disk\b[^>]*>[\s\S]*?<\/disk>/g)].flatMap((m) => {
    const disk = diskIn(m[0]);
    return disk === undefined ? [] : [{ block: m[0], index: m.index, disk }];
  });
}

const withoutBacking = (block: string): string => block.replace(BACKING_STORE, '');

/** The one disk in `block`, parsed without its backing chain; undefined when it is not file-backed. */
const diskIn = (block: string): DomainDisk | undefined =>
  parseDomainDisks(`<domain><name>x</name><devices>${withoutBacking(block)}</devices></domain>`)[0];

/** A disk's whole chain below its source: nested elements up to the outermost end tag, or one self-closed. */
const BACKING_STORE = /\s*<backingStore\b[\s\S]*<\/backingStore>|\s*<backingStore\b[^>]*\/>/;

function escapeAttribute(value: string): string {
  return value.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
}

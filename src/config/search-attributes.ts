import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * The custom search attributes of a merge: the one place their names and types are defined. The
 * workflows set them, the dev server registers them (`--search-attribute Name=Keyword`), and a
 * cluster registers them once per namespace with
 * `temporal operator search-attribute create --name VmId --type Keyword --name HostId --type Keyword ...`
 * (each `--type` pairs with the `--name` at its position; see README).
 * With them an operator lists every merge of one VM: `temporal workflow list --query 'VmId="vm-7"'`.
 */

/** The VM whose snapshot is removed. */
export const VM_ID = defineSearchAttributeKey('VmId', SearchAttributeType.KEYWORD);
/** The hypervisor host that runs the VM (and the merge's steps). */
export const HOST_ID = defineSearchAttributeKey('HostId', SearchAttributeType.KEYWORD);
/** The snapshot being removed. */
export const SNAPSHOT_ID = defineSearchAttributeKey('SnapshotId', SearchAttributeType.KEYWORD);
/** The disk of a DiskMergeWorkflow (children only). */
export const DISK_ID = defineSearchAttributeKey('DiskId', SearchAttributeType.KEYWORD);
/** How the merge (or one disk's merge) ended; unset while it runs. */
export const MERGE_OUTCOME = defineSearchAttributeKey('MergeOutcome', SearchAttributeType.KEYWORD);

/** `live` or `offline` (a DiskMergeWorkflow, once its merge step decided); a merge's: its disks' mode, or `mixed`. */
export const MERGE_MODE = defineSearchAttributeKey('MergeMode', SearchAttributeType.KEYWORD);
/**
 * Once merged, the volume each disk starts from, as `diskId=volumeId`: a caller that keeps the VM's
 * definition starts the VM from these after an offline merge.
 */
export const ACTIVE_VOLUMES = defineSearchAttributeKey('ActiveVolumes', SearchAttributeType.KEYWORD_LIST);

export type MergeOutcomeValue = 'merged' | 'failed' | 'cancelled';

export const MERGE_SEARCH_ATTRIBUTES = [
  VM_ID,
  HOST_ID,
  SNAPSHOT_ID,
  DISK_ID,
  MERGE_OUTCOME,
  MERGE_MODE,
  ACTIVE_VOLUMES,
] as const;

/** The Temporal CLI's name of a search attribute type, e.g. `Keyword`, as `--type` and `--search-attribute` take it. */
export function cliTypeName(type: SearchAttributeType): string {
  return type
    .split('_')
    .map((w) => w.charAt(0) + w.slice(1).toLowerCase())
    .join('');
}

/** `--search-attribute` values for `temporal server start-dev`: `VmId=Keyword`, ... */
export function devServerSearchAttributeArgs(): string[] {
  return MERGE_SEARCH_ATTRIBUTES.flatMap((k) => ['--search-attribute', `${k.name}=${cliTypeName(k.type)}`]);
}

/**
 * The arguments of `temporal operator search-attribute create` that register `names` (all when
 * omitted). One `--type` per `--name`: the CLI pairs them by position, and a lone `--type` after
 * several names registers only the first one, yet exits 0.
 */
export function searchAttributeCreateArgs(namespace: string, names?: readonly string[]): string[] {
  const keys = MERGE_SEARCH_ATTRIBUTES.filter((k) => names === undefined || names.includes(k.name));
  return [
    'operator',
    'search-attribute',
    'create',
    '--namespace',
    namespace,
    ...keys.flatMap((k) => ['--name', k.name, '--type', cliTypeName(k.type)]),
  ];
}

import { type NativeConnection, Runtime } from '@temporalio/worker';

import { MERGE_SEARCH_ATTRIBUTES, searchAttributeCreateArgs } from '../config/search-attributes';

/**
 * The merge's search attributes that `namespace` lacks, or undefined when the server would not say
 * (e.g. no permission to list them). The workflows upsert them; in a namespace without them a
 * merge waits before its first step until they are registered.
 */
export async function missingSearchAttributes(
  connection: NativeConnection,
  namespace: string,
): Promise<string[] | undefined> {
  try {
    const { customAttributes } = await connection.operatorService.listSearchAttributes({ namespace });
    return MERGE_SEARCH_ATTRIBUTES.map((k) => k.name).filter((name) => !(name in (customAttributes ?? {})));
  } catch {
    return undefined;
  }
}

/** Logs, at the engine worker's start, the command that registers the missing attributes. */
export async function warnIfSearchAttributesMissing(connection: NativeConnection, namespace: string): Promise<void> {
  const missing = await missingSearchAttributes(connection, namespace);
  if (!missing?.length) return;
  const command = ['temporal', ...searchAttributeCreateArgs(namespace, missing)].join(' ');
  Runtime.instance().logger.warn(
    `namespace ${namespace} lacks the search attributes ${missing.join(', ')}: merges will wait before their first step until they are registered: ${command}`,
    { namespace, missing },
  );
}

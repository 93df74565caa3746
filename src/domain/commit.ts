/** An intermediate commit (below the active layer) ends by itself; an active commit needs a pivot. */
export const COMMIT_KINDS = ['active', 'intermediate'] as const;
export type CommitKind = (typeof COMMIT_KINDS)[number];

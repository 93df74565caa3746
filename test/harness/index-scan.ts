import type { ImageRefs } from '../../src/storage/qemu-img';
import type { FileId } from '../../src/volume-users/file-id';
import type { IndexScan } from '../../src/volume-users/image-index';

/** A file id on one made-up device: the guard's unit tests tell files apart by inode alone. */
export const fileId = (ino: bigint): FileId => ({ dev: 1n, ino, nlink: 1n });

/** The guard's index of one image at `path` (inode `ino`) holding `refs`, as a walk of one directory finds it. */
export function oneImageScan(path: string, ino: bigint, refs: ImageRefs): IndexScan {
  return {
    files: new Map([[path, { path, id: fileId(ino), refs }]]),
    unreadableDirs: [],
    dirs: 1,
    headersRead: 0,
    reclaimSkipped: 0,
    ms: 0,
  };
}

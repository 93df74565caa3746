/**
 * Who else uses a volume on this host (DESIGN.md rule 10): images naming it as backing anywhere
 * under the storage root, processes holding it open or locked; and the QEMU pid of a VM by its QMP
 * socket, to pass as the expected user. No Temporal here: callers turn users into refusals.
 */
export { devMajorMinor, type FileId } from './file-id';
export { ImageIndex, type ImageIndexOptions, type ImageRecord, type IndexScan } from './image-index';
export { canonicalName, type MountTable, parseMountinfo, sameName } from './names';
export { type FdOnFile, type FdScan, fdsOnFiles, walkFds } from './proc-fds';
export { type LockEntry, locksOn, parseLockLine, parseProcLocks, readProcLocks } from './proc-locks';
export { listenerPids, parseListeningInodes, vmQemuPids } from './qmp-pid';
export { isReclaimName } from './reclaim-name';
export {
  describeUser,
  type GuardStats,
  VolumeUsage,
  type VolumeUsageOptions,
  type VolumeUser,
  type VolumeUsers,
  type VolumeUsersQuery,
} from './volume-users';

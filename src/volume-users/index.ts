/**
 * Who else uses a volume on this host (DESIGN.md rule 10): images naming it as backing anywhere
 * under the storage root, processes holding it open or locked. The expected users (a VM's QEMU)
 * come from the driver (`hypervisorPids`). No Temporal here: callers turn users into refusals.
 */
export { devMajorMinor, type FileId } from './file-id';
export { ImageIndex, type ImageIndexOptions, type ImageRecord, type IndexScan } from './image-index';
export { canonicalName, type MountTable, parseMountinfo, sameName } from './names';
export { type FdOnFile, type FdScan, fdsOnFiles } from './proc-fds';
export { type LockEntry, locksOn, parseLockLine, parseProcLocks, readProcLocks } from './proc-locks';
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

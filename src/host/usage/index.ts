/**
 * Who else uses a volume on this host (DESIGN.md rule 10): images naming it as backing anywhere
 * under the storage root, processes holding it open or locked; and the QEMU pid of a VM by its QMP
 * socket, to pass as the expected user. No Temporal here: callers turn users into refusals.
 */
export { VolumeUsage, describeUser, type GuardStats, type VolumeUser, type VolumeUsers, type VolumeUsersQuery, type VolumeUsageOptions } from './volume-users';
export { ImageIndex, type ImageIndexOptions, type ImageRecord, type IndexScan } from './image-index';
export { listenerPids, vmQemuPids, parseListeningInodes } from './qmp-pid';
export { fdsOnFiles, walkFds, type FdScan, type FdOnFile } from './proc-fds';
export { parseLockLine, parseProcLocks, locksOn, readProcLocks, type LockEntry } from './proc-locks';
export { devMajorMinor, type FileId } from './file-id';
export { isReclaimName } from './reclaim-name';
export { sameName, canonicalName, parseMountinfo } from './names';

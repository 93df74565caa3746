/**
 * The lab: real QEMU VMs (running the lab guest by default, see lab/guest; or paused with no guest
 * OS) whose disks are qcow2 chains with a known data pattern in every layer, for demos and integration tests of live merges.
 *
 * A lab VM's disk `disk<d>` is a chain of K volumes `d<d>v0` (base) … `d<d>v<K-1>` (active), each
 * in `<storageRoot>/images/disk<d>/<volumeId>.qcow2` with a relative backing name. Layer i wrote
 * the byte pattern P(d,i) = 0x10 + 0x20·d + i over its own region [i·R, (i+1)·R) and over the shared
 * "overwrite" region [K·R, (K+1)·R), R = layerDataMiB MiB. Through the chain every layer region shows
 * its own layer's pattern and the overwrite region shows the top layer's pattern; a correct merge
 * never changes what the guest sees, so `verifyLabVm` passes before and after a merge.
 *
 * The manifest is `<runDir>/<vmId>/lab.json`; QEMU's pid file is `qemu.pid` and its log
 * `qemu.log` beside it, with the two QMP sockets of `layout.ts`.
 *
 * manifest.ts   names, data patterns, the manifest's schema, read and write, errors
 * processes.ts  running programs, QEMU's pid file, start and stop
 * qemu-args.ts  the QEMU command line
 * images.ts     a disk's qcow2 chain and the data its layers write
 * create.ts     createLabVm, destroyLabVm
 * qmp.ts        one QMP command at a time on a lab VM's sockets
 * chain.ts      the chains as QEMU's block graph has them and as the image headers say
 * start.ts      startLabVm: a stopped VM started again from named volumes
 * verify.ts     verifyLabVm, checkRegion, flushLabVm
 */
export { activeVolumePath, type LiveDevice, queryLabVmDevices, readHeaderChain } from './chain';
export { createLabVm, destroyLabVm } from './create';
export {
  blkdebugNodeName,
  type CreateLabVmOptions,
  createLabVmOptionsSchema,
  fileNodeName,
  formatNodeName,
  hexPattern,
  type LabBlkdebug,
  labBlkdebugSchema,
  type LabCache,
  labCacheSchema,
  type LabDisk,
  labDiskId,
  labDiskSchema,
  type LabManifest,
  labManifestSchema,
  type LabRegion,
  labRegionSchema,
  type LabVm,
  LabVmAlreadyRunningError,
  LabVmNotFoundError,
  LabVmNotRunningError,
  labVolumeId,
  layerPattern,
  LOG_FILE,
  MANIFEST_FILE,
  MAX_DISKS,
  MAX_VOLUMES,
  PID_FILE,
  readLabVm,
} from './manifest';
export {
  crashLabVm,
  imageCommitPid,
  LabCommandError,
  type LabVmStopped,
  lockedImageCommitPid,
  runningLabVmPid,
  type RunResult,
  stopLabVm,
  type StopLabVmOptions,
} from './processes';
export { auxQmpCommand, qmpCommand } from './qmp';
export { type LabVmStarted, startLabVm, type StartLabVmOptions } from './start';
export {
  checkRegion,
  type DiskReport,
  flushLabVm,
  type RegionReport,
  verifyLabVm,
  type VerifyOptions,
  type VerifyReport,
} from './verify';

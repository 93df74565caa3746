import { destroyLabVm, type LabVm } from '../../lab/vm';
import { FaultStack } from './process-stack';
import { labVm } from './scenario';

/** One FaultStack shared by the tests of a file (see `stackPerFile`). */
export interface FileStack {
  /** The started stack; read it inside a test or hook. */
  readonly stack: FaultStack;
  /** A paused lab VM (`labVm` of scenario.ts), destroyed after the test that made it. */
  labVm(vmId: string, disks: number, volumes: number, layerDataMiB?: number, idPrefix?: string): Promise<LabVm>;
}

/**
 * One FaultStack for a test file instead of one per test (a stack takes seconds to start): started
 * before the first test, closed after the last. After each test the lab VMs it made are destroyed
 * and the host agent starts again without holds; a test that needs holds calls
 * `stack.restartHost(holds)` first.
 */
export function stackPerFile(options: { driver?: 'qmp' | 'libvirt' } = {}): FileStack {
  let started: FaultStack | undefined;
  const vmIds: string[] = [];
  const file: FileStack = {
    get stack(): FaultStack {
      if (!started) throw new Error('the stack of this file is not started: use it inside a test or hook');
      return started;
    },
    labVm(vmId, disks, volumes, layerDataMiB, idPrefix) {
      vmIds.push(vmId);
      return labVm(file.stack, vmId, disks, volumes, layerDataMiB, idPrefix);
    },
  };
  beforeAll(async () => {
    started = await new FaultStack(options).start();
  });
  afterEach(async () => {
    for (const vmId of vmIds.splice(0)) await destroyLabVm(file.stack.runDir, vmId).catch(() => undefined);
    await started?.restartHost();
  });
  afterAll(async () => started?.close());
  return file;
}

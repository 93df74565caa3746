/**
 * The lab's persistent libvirt domains (lab/libvirt/domain.ts): defined, then started; shut off
 * they keep their definition and start again from it; destroyed, they are gone. A transient
 * domain is gone once shut off.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import {
  createLibvirtLabVm,
  destroyLibvirtLabVm,
  type LibvirtLabVm,
  libvirtLabVmPid,
  shutOffLibvirtLabVm,
  startLibvirtLabVm,
} from '../../lab/libvirt/domain';
import { DEFAULT_LIBVIRT_URI } from '../../src/config/worker-config';
import { volumePath } from '../../src/domain/layout';

const run = promisify(execFile);

/** `virsh domstate`, or `undefined` when libvirt has no such domain. */
async function domState(vmId: string): Promise<string | undefined> {
  try {
    return (await run('virsh', ['-q', '-c', DEFAULT_LIBVIRT_URI, 'domstate', vmId])).stdout.trim();
  } catch (err) {
    if (/failed to get domain/i.test(String((err as { stderr?: string }).stderr))) return undefined;
    throw err;
  }
}

let dir: string;
const vms: LibvirtLabVm[] = [];
beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'lm-lab-persistent-'));
});
afterAll(async () => {
  for (const vm of vms) await destroyLibvirtLabVm(vm).catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

test('a persistent domain shut off keeps its definition, starts again from it, and is gone once destroyed', async () => {
  const vm = await createLibvirtLabVm({
    storageRoot: path.join(dir, 'p'),
    vmId: 'lm-lab-persist',
    sizeMiB: 8,
    persistent: true,
  });
  vms.push(vm);
  expect(vm.persistent).toBe(true);
  expect(await domState(vm.vmId)).toBe('paused');

  await shutOffLibvirtLabVm(vm);
  expect(await domState(vm.vmId)).toBe('shut off');
  expect(await libvirtLabVmPid(vm.vmId)).toBeUndefined();
  const inactive = (await run('virsh', ['-q', '-c', vm.uri, 'dumpxml', '--inactive', vm.vmId])).stdout;
  expect(inactive).toContain(`<source file='${volumePath(vm.storageRoot, 'disk0', 'd0v2')}'`);

  await startLibvirtLabVm(vm);
  expect(await domState(vm.vmId)).toBe('paused');
  expect(await libvirtLabVmPid(vm.vmId)).toEqual(expect.any(Number));

  await destroyLibvirtLabVm(vm);
  expect(await domState(vm.vmId)).toBeUndefined();
  await destroyLibvirtLabVm(vm); // idempotent
});

test('a transient domain is gone once shut off', async () => {
  const vm = await createLibvirtLabVm({ storageRoot: path.join(dir, 't'), vmId: 'lm-lab-transient', sizeMiB: 8 });
  vms.push(vm);
  expect(vm.persistent).toBe(false);
  expect(await domState(vm.vmId)).toBe('paused');
  await shutOffLibvirtLabVm(vm);
  expect(await domState(vm.vmId)).toBeUndefined();
});

/**
 * The libvirt driver's offline methods (vmState, definedActive, redefineActive) against a `virsh`
 * that answers from files (test/harness/fake-virsh.ts): the state and the inactive definition it
 * reads, the definition it writes, and the exact virsh calls it makes.
 */
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { DiskNotFoundError } from '../../src/drivers/errors';
import { LibvirtDriver } from '../../src/drivers/libvirt/libvirt-driver';
import { LibvirtUnreachableError, VirshCommandError } from '../../src/drivers/libvirt/virsh';
import { type FakeVirsh, installFakeVirsh } from '../harness/fake-virsh';

jest.setTimeout(20_000);

const SYS = '/s/images/sys/s0.qcow2';
const FROM = '/s/images/disk0/v1.qcow2';
const TO = '/s/images/disk0/v0.qcow2';
const OTHER = '/s/images/disk0/v2.qcow2';

/** vm1: vda (no serial) on SYS first, vdb (serial disk0) on `disk0` second: a lookup that takes the first disk is wrong. */
function domain(disk0: string, backing = true): string {
  return `<domain type='kvm'>
  <name>vm1</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${SYS}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${disk0}'/>${backing ? '\n      <backingStore/>' : ''}
      <target dev='vdb' bus='virtio'/>
      <serial>disk0</serial>
    </disk>
  </devices>
</domain>
`;
}

let dir: string;
let virsh: FakeVirsh;
let driver: LibvirtDriver;
/** The directories of the files the driver defined from, by the calls read so far: each must be gone. */
let defineDirs: string[];

beforeEach(async () => {
  defineDirs = [];
  dir = await fs.mkdtemp(path.join(tmpdir(), 'lm-libvirt-offline-'));
  // No domain.xml unless a test sets one: a live dumpxml where none is expected fails.
  virsh = await installFakeVirsh(dir);
  driver = new LibvirtDriver({ uri: 'qemu:///test', runDir: path.join(dir, 'run') });
});
afterEach(async () => {
  await driver.close();
  virsh.restore();
  await fs.rm(dir, { recursive: true, force: true });
});

/** The calls, with the random part of each define file's directory as `*`; those directories go to defineDirs. */
async function calls(): Promise<string[]> {
  const raw = await virsh.calls();
  defineDirs.push(...raw.filter((c) => c.startsWith('define ')).map((c) => path.dirname(c.slice('define '.length))));
  return raw.map((c) => c.replace(/\/live-merge-define-[A-Za-z0-9]{6}\//, '/live-merge-define-*/'));
}
/** Those of the define files' directories that are still there. */
async function leftOver(): Promise<string[]> {
  const there = await Promise.all(
    defineDirs.map((d) =>
      fs.access(d).then(
        () => true,
        () => false,
      ),
    ),
  );
  return defineDirs.filter((_, i) => there[i]);
}
const inactive = (): Promise<string> => fs.readFile(virsh.file('inactive.xml'), 'utf8');
const failure = (p: Promise<unknown>): Promise<unknown> => p.catch((e: unknown) => e);

describe('vmState', () => {
  test.each([
    ['running\n\n', { running: true }],
    ['paused\n\n', { running: true }],
    ['shut off\n\n', { running: false, definition: 'hypervisor' }],
  ])('domstate %j: %j', async (state, expected) => {
    await virsh.answer('domstate', state);
    expect(await driver.vmState('vm1')).toStrictEqual(expected);
    expect(await calls()).toEqual(['domstate vm1']);
  });

  test('a domain libvirt does not know: the caller keeps its definition', async () => {
    await virsh.answer('fail-domstate', "error: failed to get domain 'vm1'\n");
    expect(await driver.vmState('vm1')).toStrictEqual({ running: false, definition: 'caller' });
  });

  test('any other failure is passed on, not taken for a missing domain', async () => {
    await virsh.answer(
      'fail-domstate',
      "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/run/libvirt/libvirt-sock': No such file or directory\n",
    );
    await expect(driver.vmState('vm1')).rejects.toThrow(LibvirtUnreachableError);
  });
});

describe('definedActive', () => {
  test("the inactive definition's source, not the live one's, of the disk by its serial, else its target", async () => {
    await virsh.answer('inactive.xml', domain(FROM));
    await virsh.answer('domain.xml', domain(OTHER));
    expect(await driver.definedActive('vm1', 'disk0')).toBe(FROM);
    expect(await driver.definedActive('vm1', 'vda')).toBe(SYS);
    expect(await calls()).toEqual(['dumpxml --inactive vm1', 'dumpxml --inactive vm1']);
  });

  test('a disk the definition does not have is DiskNotFound, naming the domain and the disk', async () => {
    await virsh.answer('inactive.xml', domain(FROM));
    const err = await failure(driver.definedActive('vm1', 'disk9'));
    expect(err).toBeInstanceOf(DiskNotFoundError);
    expect(err).toHaveProperty('message', 'domain vm1 has no disk disk9');
  });
});

describe('redefineActive', () => {
  const refusal = async (p: Promise<void>, detail: string): Promise<void> => {
    const err = await failure(p);
    expect(err).toBeInstanceOf(VirshCommandError);
    expect(err).toHaveProperty('message', `virsh define vm1: ${detail}`);
  };
  const defineCall = (): string => `define ${tmpdir()}/live-merge-define-*/vm1.xml`;
  /** One redefine's calls, up to the look after the define (whether the domain started meanwhile). */
  const redefineCalls = (): string[] => [
    'dumpxml --inactive vm1',
    'domstate vm1',
    'dumpxml --inactive --security-info vm1',
    defineCall(),
    'domstate vm1',
  ];
  /** A shut-off domain whose disk0 starts from `active`; with `startedFrom`, it starts from that volume right after the define. */
  const shutOffOn = async (active: string, startedFrom?: string): Promise<void> => {
    await virsh.answer('inactive.xml', domain(active));
    await virsh.answer('domstate', 'shut off\n\n');
    if (startedFrom === undefined) return;
    await virsh.answer('domstate-after-define', 'running\n\n');
    await virsh.answer('domain.xml', domain(startedFrom));
  };

  test('a definition already at `to` is left alone', async () => {
    await virsh.answer('inactive.xml', domain(TO));
    await driver.redefineActive('vm1', 'disk0', FROM, TO);
    expect(await calls()).toEqual(['dumpxml --inactive vm1']);
    expect(await inactive()).toBe(domain(TO));
  });

  test('a definition at neither `from` nor `to` is refused, naming both', async () => {
    await virsh.answer('inactive.xml', domain(OTHER));
    await refusal(
      driver.redefineActive('vm1', 'disk0', FROM, TO),
      `disk disk0 starts from ${OTHER}, neither ${FROM} nor ${TO}`,
    );
    expect(await calls()).toEqual(['dumpxml --inactive vm1']);
  });

  test('a running domain is refused: its definition is not changed', async () => {
    await virsh.answer('inactive.xml', domain(FROM));
    await virsh.answer('domstate', 'running\n\n');
    await refusal(driver.redefineActive('vm1', 'disk0', FROM, TO), 'domain vm1 runs: its definition is not changed');
    expect(await calls()).toEqual(['dumpxml --inactive vm1', 'domstate vm1']);
    expect(await inactive()).toBe(domain(FROM));
  });

  test('a shut-off domain is defined once, its disk on `to` without a backingStore, the rest as it was', async () => {
    await shutOffOn(FROM);
    await driver.redefineActive('vm1', 'disk0', FROM, TO);
    expect(await calls()).toEqual(redefineCalls());
    expect(await inactive()).toBe(domain(TO, false));
    // The file holds what --security-info adds (passwords): only its owner reads it.
    expect((await fs.stat(virsh.file('inactive.xml'))).mode & 0o777).toBe(0o600);
    expect(await leftOver()).toEqual([]);
  });

  test('an explicit backing chain in the definition (no indexes there) is read past and dropped', async () => {
    const explicit = domain(FROM).replace(
      '<backingStore/>',
      `<backingStore type='file'><format type='qcow2'/><source file='${TO}'/><backingStore/></backingStore>`,
    );
    await virsh.answer('inactive.xml', explicit);
    await virsh.answer('domstate', 'shut off\n\n');
    expect(await driver.definedActive('vm1', 'disk0')).toBe(FROM);
    await driver.redefineActive('vm1', 'disk0', FROM, TO);
    expect(await inactive()).toBe(domain(TO, false));
  });

  test('a domain that started from `from` meanwhile gets its old definition back, and the step refuses', async () => {
    await shutOffOn(FROM, FROM);
    await refusal(
      driver.redefineActive('vm1', 'disk0', FROM, TO),
      `domain vm1 started from ${FROM} meanwhile: its definition is left as it was`,
    );
    expect(await calls()).toEqual([...redefineCalls(), 'dumpxml vm1', defineCall()]);
    expect(await inactive()).toBe(domain(FROM));
    expect(await leftOver()).toEqual([]);
  });

  test('a domain that started from `to` meanwhile keeps the new definition', async () => {
    await shutOffOn(FROM, TO);
    await driver.redefineActive('vm1', 'disk0', FROM, TO);
    expect(await calls()).toEqual([...redefineCalls(), 'dumpxml vm1']);
    expect(await inactive()).toBe(domain(TO, false));
    expect(await leftOver()).toEqual([]);
  });
});

import { ApplicationFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';

import type { HostDeps } from '../../src/activities/deps';
import { keepAlive } from '../../src/activities/keep-alive';
import { guardDelete } from '../../src/activities/volume-guard';
import { dependants, type Target } from '../../src/volume-users/dependants';
import { describeUser, type VolumeUser } from '../../src/volume-users/volume-users';
import { fileId, oneImageScan } from '../harness/index-scan';

/**
 * The guard's refusals as the user reads them: which failure type a set of users makes, and the
 * words each user is described with; a file outside the walk whose directory cannot be resolved
 * is still followed; a host step's heartbeat stops with the step.
 */

/** The delete's guard against users found by a usage stub; the VM's QEMU is pid 1. */
async function refusalOf(users: VolumeUser[]): Promise<ApplicationFailure> {
  const deps = {
    usage: { findUsersOfEach: async () => ({ results: [{ volume: '/s/images/disk0/v1.qcow2', users }] }) },
    driver: { hypervisorPids: async () => [1] },
  } as unknown as HostDeps;
  const err = await guardDelete(deps, 'vm1', '/s/images/disk0/v1.qcow2', 'disk0').then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ApplicationFailure);
  return err as ApplicationFailure;
}

describe('the failure type a set of users makes', () => {
  const unresolved: VolumeUser = { kind: 'unresolvedName', image: '/s/x.qcow2', why: 'its backing name is nbd://h/e' };
  const unreadable: VolumeUser = { kind: 'unreadable', path: '/s/y.qcow2', error: 'EIO' };

  test('names that cannot be tied to a file: UnresolvedImageName, with each user in the message and the details', async () => {
    const err = await refusalOf([unresolved]);
    expect(err.type).toBe('UnresolvedImageName');
    expect(err.message).toBe(
      'volume v1 of disk disk0 is still used?: /s/x.qcow2 holds a name this host cannot tie to a file, so it may use it: its backing name is nbd://h/e; nothing was touched',
    );
    expect(err.details).toEqual([{ users: [unresolved] }]);
  });

  test('unreadable files beside unresolved names: UnresolvedImageName too; unreadable alone: CorruptImageHeader', async () => {
    expect((await refusalOf([unreadable, unresolved])).type).toBe('UnresolvedImageName');
    expect((await refusalOf([unreadable])).type).toBe('CorruptImageHeader');
  });

  test('a real user beside them: the refusal of a volume in use', async () => {
    expect((await refusalOf([unresolved, { kind: 'backingOf', image: '/s/z.qcow2' }])).type).toBe('VolumeInUse');
  });
});

describe('the words for each user', () => {
  test('data files, chains through other files, unresolved names', () => {
    expect(describeUser({ kind: 'dataFileOf', image: '/s/a.qcow2', through: ['/o/b.qcow2', '/o/c.qcow2'] })).toBe(
      'it is the external data file of /s/a.qcow2 (through /o/b.qcow2, /o/c.qcow2)',
    );
    expect(describeUser({ kind: 'backingOf', image: '/s/a.qcow2', through: ['/o/b.qcow2'] })).toBe(
      'it is the backing file of /s/a.qcow2 (through /o/b.qcow2)',
    );
    expect(describeUser({ kind: 'backingOf', image: '/s/a.qcow2' })).toBe('it is the backing file of /s/a.qcow2');
    expect(describeUser({ kind: 'unresolvedName', image: '/s/a.qcow2', why: 'its data file name is relative' })).toBe(
      '/s/a.qcow2 holds a name this host cannot tie to a file, so it may use it: its data file name is relative',
    );
  });
});

test('a file outside the walk in a directory that does not resolve here is still followed', async () => {
  const t: Target = { path: '/s/v.qcow2', id: fileId(1n) };
  const scan = oneImageScan('/s/c.qcow2', 3n, { backing: '/nonexistent-dir/b.qcow2' });
  const users = await dependants(t, new Set(), {
    scan,
    // The file stats (as through a mount this process does not see), its directory does not resolve.
    statOf: (p) => (p === '/s/v.qcow2' ? fileId(1n) : p === '/nonexistent-dir/b.qcow2' ? fileId(4n) : undefined),
    mounts: () => [],
    refsOf: async (p) => (p === '/nonexistent-dir/b.qcow2' ? { backing: '/s/v.qcow2' } : undefined),
  });
  expect(users).toEqual([{ kind: 'backingOf', image: '/s/c.qcow2', through: ['/nonexistent-dir/b.qcow2'] }]);
});

test('a host step heartbeats while it runs, and no more once it has returned', async () => {
  const env = new MockActivityEnvironment();
  let beats = 0;
  env.on('heartbeat', () => beats++);
  const step = keepAlive(async () => new Promise<string>((resolve) => setTimeout(() => resolve('done'), 1_300)));
  await expect(env.run(step)).resolves.toBe('done');
  const atReturn = beats;
  expect(atReturn).toBeGreaterThanOrEqual(1);
  await new Promise((resolve) => setTimeout(resolve, 1_300));
  expect(beats).toBe(atReturn);
});

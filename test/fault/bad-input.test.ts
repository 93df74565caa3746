import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';

import { auxQmpCommand, destroyLabVm, type LabVm, verifyLabVm } from '../../lab/vm';
import { InvalidMergeRequestError, LiveMergeClient } from '../../src/client';
import { diskMergeWorkflowId, ENGINE_TASK_QUEUE, liveMergeWorkflowId } from '../../src/config/names';
import { idSchema } from '../../src/domain/input';
import { snapshotFiles } from '../harness/in-process-stack';
import { FaultStack, HOST_ID } from '../harness/process-stack';
import { labVm } from '../harness/scenario';
import { type CliRun, temporalCli } from '../harness/temporal-cli';

/**
 * Issue 3, scenario 10: a table of bad inputs, each sent through the real Temporal CLI (v1.5.1)
 * and through the engine client (LiveMergeClient). Each fails fast, naming the field or the cause,
 * and changes no chain and no file. One stack and one lab VM serve the whole table.
 *
 * - schema: the client refuses before sending (no workflow on the server); the CLI starts the
 *   workflow, which fails at once with InvalidMergeInput before any host step or child.
 * - host: valid input the host refuses (VmNotFound, DiskNotFound, VolumeNotInChain,
 *   BaseNotBacking): the disk's child fails with that type, the merge fails naming the disk.
 * - unreachable: a host with no agent fails the disk with HostUnreachable after the merge's
 *   hostPickupTimeoutSeconds, not after minutes; the disk's workflow, which never ran (its queue
 *   is the host's), is terminated with that reason.
 * - notStarted: the CLI (malformed JSON) or the server (payload over its size limit) refuses to
 *   start the workflow; the client refuses it before sending, naming the field.
 * - workflowId: a workflow id not derived from the snapshot is refused by the workflow.
 * - child: DiskMergeWorkflow, on the engine queue, started on its own with bad input: it fails
 *   at once with InvalidMergeInput too (LiveMergeClient never starts it: the Temporal client does).
 */

jest.setTimeout(300_000);

const VM_ID = 'vm-bi';
const PICKUP_S = 2;
/** A bad input's workflow ends within this (start + result through the CLI, on a shared 2-core box). */
const SCHEMA_FAST_MS = 5_000;
/** A host-refused merge ends within this: one refused step and one cleanup step. */
const HOST_FAST_MS = 10_000;
/** The unreachable host's merge ends within its pickup timeout and this much more. */
const PICKUP_SLACK_MS = 6_000;

type Kind = 'schema' | 'host' | 'unreachable' | 'workflowId' | 'notStarted' | 'child';
type Channel = 'cli' | 'client';

interface Case {
  name: string;
  kind: Kind;
  /** The request; `snap` is a fresh, valid snapshot id per case and channel. */
  request: (snap: string) => unknown;
  /** What the error must say, on both channels: the field with its problem, or the cause. */
  says: RegExp;
  /** Schema cases: the fields the client names (deduplicated, in order). */
  fields?: string[];
  /** Host cases: the failure type of each disk's DiskMergeWorkflow. */
  diskTypes?: Record<string, string>;
  /** notStarted: what the CLI says when it (or the server) refuses to start the workflow. */
  cliRefusal?: RegExp;
  /** CLI: send this text instead of the request as JSON; null sends no input at all. */
  cliText?: (snap: string) => string | null;
}

const disk0 = { diskId: 'disk0', baseVolumeId: 'd0v0', topVolumeId: 'd0v1' };
const disk1 = { diskId: 'disk1', baseVolumeId: 'd1v1', topVolumeId: 'd1v2' };

/** A request that would merge d0v1 into d0v0: every case breaks one thing in it. */
function good(snap: string) {
  return { snapshotId: snap, vmId: VM_ID, hostId: HOST_ID, disks: [{ ...disk0 }], options: { pollIntervalMs: 100 } };
}
function withDisk(snap: string, patch: Record<string, unknown>) {
  return { ...good(snap), disks: [{ ...disk0, ...patch }] };
}
/** The request with a `__proto__` key, as only JSON text can carry it (an own property once parsed). */
function protoText(snap: string): string {
  return JSON.stringify(good(snap)).replace('{', '{"__proto__": {"polluted": true}, ');
}
/** What LiveMergeWorkflow would give the disk0 child of `good(snap)`. */
function childInput(snap: string) {
  return {
    snapshotId: snap,
    vmId: VM_ID,
    hostId: HOST_ID,
    disk: { ...disk0 },
    options: { pollIntervalMs: 100, bandwidthBytesPerSec: 0, hostPickupTimeoutSeconds: PICKUP_S },
  };
}
function without<T extends Record<string, unknown>>(o: T, key: string): Record<string, unknown> {
  const { [key]: _dropped, ...rest } = o;
  return rest;
}
const ID_RULE = /must be letters, digits, "-" or "_", starting with a letter or digit/;
function idRule(field: string): RegExp {
  return new RegExp(`${field.replace(/\./g, '\\.')}: ${ID_RULE.source}`);
}

const cases: Case[] = [
  // Missing and unknown fields.
  {
    name: 'missing snapshotId',
    kind: 'schema',
    request: (s) => without(good(s), 'snapshotId'),
    fields: ['snapshotId'],
    says: /snapshotId: Invalid input: expected string, received undefined/,
  },
  {
    name: 'missing disks',
    kind: 'schema',
    request: (s) => without(good(s), 'disks'),
    fields: ['disks'],
    says: /disks: Invalid input: expected array, received undefined/,
  },
  {
    name: 'missing topVolumeId',
    kind: 'schema',
    request: (s) => ({ ...good(s), disks: [without(disk0, 'topVolumeId')] }),
    fields: ['disks.0.topVolumeId'],
    says: /disks\.0\.topVolumeId: Invalid input: expected string, received undefined/,
  },
  {
    name: 'unknown top-level field',
    kind: 'schema',
    request: (s) => ({ ...good(s), force: true }),
    fields: ['(input)'],
    says: /\(input\): Unrecognized key: "force"/,
  },
  {
    name: 'unknown field in a disk',
    kind: 'schema',
    request: (s) => withDisk(s, { deleteBase: true }),
    fields: ['disks.0'],
    says: /disks\.0: Unrecognized key: "deleteBase"/,
  },
  {
    name: 'unknown option',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { retries: 3 } }),
    fields: ['options'],
    says: /options: Unrecognized key: "retries"/,
  },
  // Empty, oversized and malformed ids.
  {
    name: 'empty snapshotId',
    kind: 'schema',
    request: (s) => ({ ...good(s), snapshotId: '' }),
    fields: ['snapshotId'],
    says: /snapshotId: must not be empty/,
  },
  {
    name: 'empty vmId',
    kind: 'schema',
    request: (s) => ({ ...good(s), vmId: '' }),
    fields: ['vmId'],
    says: /vmId: must not be empty/,
  },
  {
    name: 'empty diskId',
    kind: 'schema',
    request: (s) => withDisk(s, { diskId: '' }),
    fields: ['disks.0.diskId'],
    says: /disks\.0\.diskId: must not be empty/,
  },
  {
    name: 'empty baseVolumeId',
    kind: 'schema',
    request: (s) => withDisk(s, { baseVolumeId: '' }),
    fields: ['disks.0.baseVolumeId'],
    says: /disks\.0\.baseVolumeId: must not be empty/,
  },
  {
    name: 'snapshotId with spaces',
    kind: 'schema',
    request: (s) => ({ ...good(s), snapshotId: `${s} 42` }),
    fields: ['snapshotId'],
    says: idRule('snapshotId'),
  },
  {
    name: 'vmId of 65 characters',
    kind: 'schema',
    request: (s) => ({ ...good(s), vmId: 'v'.repeat(65) }),
    fields: ['vmId'],
    says: /vmId: must be at most 64 characters/,
  },
  {
    name: 'topVolumeId of 100,000 characters',
    kind: 'schema',
    request: (s) => withDisk(s, { topVolumeId: 'd'.repeat(100_000) }),
    fields: ['disks.0.topVolumeId'],
    says: /disks\.0\.topVolumeId: must be at most 64 characters/,
  },
  // Path separators, `..` and look-alikes in ids.
  {
    name: 'diskId ".."',
    kind: 'schema',
    request: (s) => withDisk(s, { diskId: '..' }),
    fields: ['disks.0.diskId'],
    says: idRule('disks.0.diskId'),
  },
  {
    name: 'baseVolumeId "../d0v0"',
    kind: 'schema',
    request: (s) => withDisk(s, { baseVolumeId: '../d0v0' }),
    fields: ['disks.0.baseVolumeId'],
    says: idRule('disks.0.baseVolumeId'),
  },
  {
    name: 'topVolumeId "d0v1/../../../etc/passwd"',
    kind: 'schema',
    request: (s) => withDisk(s, { topVolumeId: 'd0v1/../../../etc/passwd' }),
    fields: ['disks.0.topVolumeId'],
    says: idRule('disks.0.topVolumeId'),
  },
  {
    name: 'vmId "../vm-bi"',
    kind: 'schema',
    request: (s) => ({ ...good(s), vmId: `../${VM_ID}` }),
    fields: ['vmId'],
    says: idRule('vmId'),
  },
  {
    name: 'hostId "host1/../host2"',
    kind: 'schema',
    request: (s) => ({ ...good(s), hostId: 'host1/../host2' }),
    fields: ['hostId'],
    says: idRule('hostId'),
  },
  {
    name: 'absolute topVolumeId "/etc/passwd"',
    kind: 'schema',
    request: (s) => withDisk(s, { topVolumeId: '/etc/passwd' }),
    fields: ['disks.0.topVolumeId'],
    says: idRule('disks.0.topVolumeId'),
  },
  {
    name: 'diskId with a backslash',
    kind: 'schema',
    request: (s) => withDisk(s, { diskId: 'disk0\\..' }),
    fields: ['disks.0.diskId'],
    says: idRule('disks.0.diskId'),
  },
  {
    name: 'topVolumeId starting with "-"',
    kind: 'schema',
    request: (s) => withDisk(s, { topVolumeId: '-d0v1' }),
    fields: ['disks.0.topVolumeId'],
    says: idRule('disks.0.topVolumeId'),
  },
  {
    name: 'topVolumeId with a "." (QEMU job id separator)',
    kind: 'schema',
    request: (s) => withDisk(s, { topVolumeId: 'd0v1.x' }),
    fields: ['disks.0.topVolumeId'],
    says: idRule('disks.0.topVolumeId'),
  },
  {
    name: 'unicode vmId "vm-bí"',
    kind: 'schema',
    request: (s) => ({ ...good(s), vmId: 'vm-bí' }),
    fields: ['vmId'],
    says: idRule('vmId'),
  },
  {
    name: 'homoglyph diskId (Cyrillic і)',
    kind: 'schema',
    request: (s) => withDisk(s, { diskId: 'd\u0456sk0' }),
    fields: ['disks.0.diskId'],
    says: idRule('disks.0.diskId'),
  },
  {
    name: 'zero-width space in topVolumeId',
    kind: 'schema',
    request: (s) => withDisk(s, { topVolumeId: 'd0v1\u200b' }),
    fields: ['disks.0.topVolumeId'],
    says: idRule('disks.0.topVolumeId'),
  },
  {
    name: 'NUL byte in baseVolumeId',
    kind: 'schema',
    request: (s) => withDisk(s, { baseVolumeId: 'd0v0\u0000' }),
    fields: ['disks.0.baseVolumeId'],
    says: idRule('disks.0.baseVolumeId'),
  },
  {
    name: 'newline in snapshotId',
    kind: 'schema',
    request: (s) => ({ ...good(s), snapshotId: `${s}\n` }),
    fields: ['snapshotId'],
    says: idRule('snapshotId'),
  },
  // Disk lists.
  {
    name: 'top equal to base',
    kind: 'schema',
    request: (s) => withDisk(s, { topVolumeId: 'd0v0' }),
    fields: ['disks.0.topVolumeId'],
    says: /disks\.0\.topVolumeId: topVolumeId must differ from baseVolumeId/,
  },
  {
    name: 'empty disk list',
    kind: 'schema',
    request: (s) => ({ ...good(s), disks: [] }),
    fields: ['disks'],
    says: /disks: must name at least one disk/,
  },
  {
    name: 'duplicate disk',
    kind: 'schema',
    request: (s) => ({
      ...good(s),
      disks: [{ ...disk0 }, { diskId: 'disk0', baseVolumeId: 'd0v1', topVolumeId: 'd0v2' }],
    }),
    fields: ['disks'],
    says: /disks: must not name a disk twice/,
  },
  {
    name: '65 disks',
    kind: 'schema',
    request: (s) => ({
      ...good(s),
      disks: Array.from({ length: 65 }, (_, i) => ({ diskId: `disk${i}`, baseVolumeId: 'a', topVolumeId: 'b' })),
    }),
    fields: ['disks'],
    says: /disks: must name at most 64 disks/,
  },
  // Wrong types.
  {
    name: 'vmId a number',
    kind: 'schema',
    request: (s) => ({ ...good(s), vmId: 7 }),
    fields: ['vmId'],
    says: /vmId: Invalid input: expected string, received number/,
  },
  {
    name: 'disks an object',
    kind: 'schema',
    request: (s) => ({ ...good(s), disks: { disk0 } }),
    fields: ['disks'],
    says: /disks: Invalid input: expected array, received object/,
  },
  {
    name: 'a disk given as a string',
    kind: 'schema',
    request: (s) => ({ ...good(s), disks: ['disk0'] }),
    fields: ['disks.0'],
    says: /disks\.0: Invalid input: expected object, received string/,
  },
  {
    name: 'hostId null',
    kind: 'schema',
    request: (s) => ({ ...good(s), hostId: null }),
    fields: ['hostId'],
    says: /hostId: Invalid input: expected string, received null/,
  },
  {
    name: 'options an array',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: [] }),
    fields: ['options'],
    says: /options: Invalid input: expected object, received array/,
  },
  {
    name: 'input null',
    kind: 'schema',
    request: () => null,
    fields: ['(input)'],
    says: /\(input\): Invalid input: expected object, received null/,
  },
  {
    name: 'input an array holding the request',
    kind: 'schema',
    request: (s) => [good(s)],
    fields: ['(input)'],
    says: /\(input\): Invalid input: expected object, received array/,
  },
  {
    name: 'input a JSON string',
    kind: 'schema',
    request: (s) => s,
    fields: ['(input)'],
    says: /\(input\): Invalid input: expected object, received string/,
  },
  {
    name: 'no input at all',
    kind: 'schema',
    request: () => undefined,
    cliText: () => null,
    fields: ['(input)'],
    says: /\(input\): Invalid input: expected object, received undefined/,
  },
  // Options out of range.
  {
    name: 'negative bandwidth',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { bandwidthBytesPerSec: -1 } }),
    fields: ['options.bandwidthBytesPerSec'],
    says: /options\.bandwidthBytesPerSec: Too small: expected number to be >=0/,
  },
  {
    name: 'fractional bandwidth',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { bandwidthBytesPerSec: 1.5 } }),
    fields: ['options.bandwidthBytesPerSec'],
    says: /options\.bandwidthBytesPerSec: Invalid input: expected int, received number/,
  },
  {
    name: 'bandwidth as a string "10M"',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { bandwidthBytesPerSec: '10M' } }),
    fields: ['options.bandwidthBytesPerSec'],
    says: /options\.bandwidthBytesPerSec: Invalid input: expected number, received string/,
  },
  {
    name: 'bandwidth 1e300',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { bandwidthBytesPerSec: 1e300 } }),
    fields: ['options.bandwidthBytesPerSec'],
    says: /options\.bandwidthBytesPerSec: Too big/,
  },
  {
    name: 'pollIntervalMs 10 (below 50)',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { pollIntervalMs: 10 } }),
    fields: ['options.pollIntervalMs'],
    says: /options\.pollIntervalMs: Too small: expected number to be >=50/,
  },
  {
    name: 'pollIntervalMs one hour (above 60 s)',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { pollIntervalMs: 3_600_000 } }),
    fields: ['options.pollIntervalMs'],
    says: /options\.pollIntervalMs: Too big: expected number to be <=60000/,
  },
  {
    name: 'hostPickupTimeoutSeconds 0',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { hostPickupTimeoutSeconds: 0 } }),
    fields: ['options.hostPickupTimeoutSeconds'],
    says: /options\.hostPickupTimeoutSeconds: Too small: expected number to be >=1/,
  },
  {
    name: 'hostPickupTimeoutSeconds 2.5',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { hostPickupTimeoutSeconds: 2.5 } }),
    fields: ['options.hostPickupTimeoutSeconds'],
    says: /options\.hostPickupTimeoutSeconds: Invalid input: expected int, received number/,
  },
  {
    name: 'several problems at once',
    kind: 'schema',
    request: (s) => ({
      ...good(s),
      vmId: 'vm bi',
      disks: [{ ...disk0, baseVolumeId: '..' }],
      options: { pollIntervalMs: 0 },
    }),
    fields: ['vmId', 'disks.0.baseVolumeId', 'options.pollIntervalMs'],
    says: /vmId: must be letters.*; disks\.0\.baseVolumeId: must be letters.*; options\.pollIntervalMs: Too small/,
  },
  // What JSON can say that a TypeScript caller would not.
  {
    name: '"__proto__" key in the JSON',
    kind: 'schema',
    request: (s) => JSON.parse(protoText(s)),
    cliText: protoText,
    fields: ['(input)'],
    says: /\(input\): Unrecognized key: "__proto__"/,
  },
  {
    name: 'bandwidth 1e400 (Infinity once parsed)',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { bandwidthBytesPerSec: Infinity } }),
    cliText: (s) => JSON.stringify(good(s)).replace('"options":{', '"options":{"bandwidthBytesPerSec":1e400,'),
    fields: ['options.bandwidthBytesPerSec'],
    says: /options\.bandwidthBytesPerSec: Invalid input: expected number, received Infinity/,
  },
  {
    name: 'bandwidth NaN (null in JSON)',
    kind: 'schema',
    request: (s) => ({ ...good(s), options: { bandwidthBytesPerSec: NaN } }),
    fields: ['options.bandwidthBytesPerSec'],
    says: /options\.bandwidthBytesPerSec: Invalid input: expected number, received (NaN|null)/,
  },
  {
    name: "input of 3 MB (over Temporal's payload limit)",
    request: (s) => withDisk(s, { topVolumeId: 'd'.repeat(3 * 1024 * 1024) }),
    fields: ['disks.0.topVolumeId'],
    says: /disks\.0\.topVolumeId: must be at most 64 characters/,
    kind: 'notStarted',
    cliRefusal: /failed starting workflow: Blob data size exceeds limit/,
  },
  // Not JSON: the CLI refuses it itself; the client gets the text as a string.
  {
    name: 'malformed JSON text',
    kind: 'notStarted',
    cliRefusal: /input #1 is not valid JSON/,
    request: () => '{"snapshotId": "x",',
    cliText: () => '{"snapshotId": "x",',
    fields: ['(input)'],
    says: /\(input\): Invalid input: expected object, received string/,
  },
  // The workflow id must be live-merge-<snapshotId>.
  {
    name: 'workflow id not derived from the snapshot',
    kind: 'workflowId',
    request: (s) => good(s),
    says: /workflowId must be live-merge-bi\d+-(cli|client) \(one merge per snapshot\), got merge-of-bi\d+/,
  },
  // The per-disk child type started on its own: it checks its input too.
  {
    name: 'DiskMergeWorkflow on its own with {}',
    kind: 'child',
    request: () => ({}),
    says: /snapshotId: Invalid input: expected string, received undefined; vmId: .*; hostId: .*; disk: Invalid input: expected object, received undefined/,
  },
  {
    name: 'DiskMergeWorkflow on its own, hostId "a/b"',
    kind: 'child',
    request: (s) => ({ ...childInput(s), hostId: 'a/b' }),
    says: idRule('hostId'),
  },
  {
    name: 'DiskMergeWorkflow on its own, base "../d0v0"',
    kind: 'child',
    request: (s) => ({ ...childInput(s), disk: { ...disk0, baseVolumeId: '../d0v0' } }),
    says: idRule('disk.baseVolumeId'),
  },
  {
    name: 'DiskMergeWorkflow on its own, pollIntervalMs a string',
    kind: 'child',
    request: (s) => ({ ...childInput(s), options: { pollIntervalMs: '100' } }),
    says: /options\.pollIntervalMs: Invalid input: expected number, received string/,
  },
  // Valid input the host refuses: the disk fails with the named cause, top kept.
  {
    name: 'unknown VM',
    kind: 'host',
    // No VM of that id runs here, so its disk is merged offline; the guard then finds the lab VM's QEMU on it.
    request: (s) => ({ ...good(s), vmId: 'vm-nowhere' }),
    diskTypes: { disk0: 'BaseShared' },
    says: /disk0 \(disk disk0: base volume d0v0 of disk disk0 is used outside its chain: process \d+ \(qemu-system-x86\) has it open.*nothing was touched; top volume d0v1 kept\)/,
  },
  {
    name: 'unknown disk',
    kind: 'host',
    request: (s) => withDisk(s, { diskId: 'disk9' }),
    diskTypes: { disk9: 'DiskNotFound' },
    says: /disk9 \(disk disk9: VM vm-bi has no disk disk9; top volume d0v1 kept\)/,
  },
  {
    name: 'top not in the chain',
    kind: 'host',
    request: (s) => withDisk(s, { topVolumeId: 'd0v7' }),
    diskTypes: { disk0: 'VolumeNotInChain' },
    says: /top volume d0v7 is not in the chain of disk disk0 \(d0v2 -> d0v1 -> d0v0\)/,
  },
  {
    name: 'volumes of another disk',
    kind: 'host',
    request: (s) => withDisk(s, { baseVolumeId: 'd1v0', topVolumeId: 'd1v1' }),
    diskTypes: { disk0: 'VolumeNotInChain' },
    says: /top volume d1v1 is not in the chain of disk disk0/,
  },
  {
    name: "base not the top's backing (skips a layer)",
    kind: 'host',
    request: (s) => withDisk(s, { baseVolumeId: 'd0v0', topVolumeId: 'd0v2' }),
    diskTypes: { disk0: 'BaseNotBacking' },
    says: /base volume d0v0 is not the backing of top d0v2 on disk disk0 \(d0v2 -> d0v1 -> d0v0\)/,
  },
  {
    name: 'base above top (reversed)',
    kind: 'host',
    request: (s) => withDisk(s, { baseVolumeId: 'd0v1', topVolumeId: 'd0v0' }),
    diskTypes: { disk0: 'BaseNotBacking' },
    says: /base volume d0v1 is not the backing of top d0v0/,
  },
  {
    name: 'base not in the chain',
    kind: 'host',
    request: (s) => withDisk(s, { baseVolumeId: 'd0v8' }),
    diskTypes: { disk0: 'BaseNotBacking' },
    says: /base volume d0v8 is not the backing of top d0v1/,
  },
  {
    name: 'two disks, both refused',
    kind: 'host',
    request: (s) => ({
      ...good(s),
      disks: [
        { ...disk0, topVolumeId: 'd0v9' },
        { ...disk1, baseVolumeId: 'd1v0' },
      ],
    }),
    diskTypes: { disk0: 'VolumeNotInChain', disk1: 'BaseNotBacking' },
    says: /2 of 2 disks failed: disk0 \(.*top volume d0v9 is not in the chain.*\); disk1 \(.*base volume d1v0 is not the backing of top d1v2/,
  },
  // A host nobody serves: bounded pickup, clear failure.
  {
    name: 'host with no agent (hostPickupTimeoutSeconds 2)',
    kind: 'unreachable',
    request: (s) => ({ ...good(s), hostId: 'host-nobody', options: { hostPickupTimeoutSeconds: PICKUP_S } }),
    diskTypes: { disk0: 'HostUnreachable' },
    says: /host host-nobody did not pick up the merge within 2 s: no host agent polls live-merge-host-host-nobody-jobs; top volume d0v1 kept/,
  },
];

let stack: FaultStack;
let vm: LabVm;
let merges: LiveMergeClient;
let dir: string;
let chainsBefore: Record<string, string[]>;
const timings: Array<{ n: number; name: string; channel: Channel; ms: number }> = [];
/** Every workflow the table started on purpose (parents and children). */
const expectedWorkflows = new Set<string>();

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'lm-bad-input-'));
  stack = await new FaultStack().start();
  vm = await labVm(stack, VM_ID, 2, 3);
  merges = await LiveMergeClient.connect({ client: stack.client });
  const report = await verifyLabVm(stack.runDir, VM_ID);
  expect(report.ok).toBe(true);
  chainsBefore = Object.fromEntries(report.disks.map((d) => [d.diskId, d.chain]));
  expect(chainsBefore).toEqual({ disk0: ['d0v2', 'd0v1', 'd0v0'], disk1: ['d1v2', 'd1v1', 'd1v0'] });
});

afterAll(async () => {
  const rows = timings.map(
    (t) => `${String(t.n).padStart(2)} ${t.channel.padEnd(6)} ${String(t.ms).padStart(5)} ms  ${t.name}`,
  );
  console.log(`bad input: ${cases.length} cases, ${timings.length} runs\n${rows.join('\n')}`);
  if (vm) await destroyLabVm(stack.runDir, VM_ID).catch(() => undefined);
  await stack?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function temporal(...args: string[]): Promise<CliRun> {
  return temporalCli(stack.server, dir)(...args);
}

interface CliFailure {
  message?: string;
  cause?: CliFailure;
  applicationFailureInfo?: { type?: string; nonRetryable?: boolean };
}

/** `temporal workflow result -o json` of a workflow that must have failed: its failure. */
async function cliFailure(workflowId: string): Promise<CliFailure> {
  const run = await temporal('workflow', 'result', '--workflow-id', workflowId, '--output', 'json');
  expect(run.code).not.toBe(0); // the CLI exits non-zero for a failed workflow
  const out = JSON.parse(run.stdout) as {
    closeEvent?: { eventType?: string; workflowExecutionFailedEventAttributes?: { failure?: CliFailure } };
  };
  expect([workflowId, out.closeEvent?.eventType]).toEqual([workflowId, 'EVENT_TYPE_WORKFLOW_EXECUTION_FAILED']);
  return out.closeEvent!.workflowExecutionFailedEventAttributes!.failure!;
}

/** Event types of a workflow's history, through `temporal workflow show -o json`. */
async function cliEventTypes(workflowId: string): Promise<string[]> {
  const run = await temporal('workflow', 'show', '--workflow-id', workflowId, '--output', 'json');
  expect(run.code).toBe(0);
  return (JSON.parse(run.stdout) as { events: Array<{ eventType: string }> }).events.map((e) => e.eventType);
}

/** Every file under the storage root (size and mtime) and every name under the run dir. */
function storageState() {
  const runNames: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      runNames.push(path.relative(stack.runDir, path.join(d, e.name)));
      if (e.isDirectory()) walk(path.join(d, e.name));
    }
  };
  walk(stack.runDir);
  return { storage: snapshotFiles(stack.storageRoot), run: runNames.sort() };
}

async function expectChainsUnchanged(): Promise<void> {
  const report = await verifyLabVm(stack.runDir, VM_ID);
  expect(report.ok).toBe(true);
  expect(Object.fromEntries(report.disks.map((d) => [d.diskId, d.chain]))).toEqual(chainsBefore);
  expect(await auxQmpCommand(stack.runDir, VM_ID, 'query-jobs')).toEqual([]);
}

function isValidId(v: unknown): v is string {
  return typeof v === 'string' && idSchema.safeParse(v).success;
}

function diskIdsOf(request: unknown): string[] {
  return ((request as { disks: Array<{ diskId: string }> }).disks ?? []).map((d) => d.diskId);
}

async function viaCli(c: Case, n: number): Promise<void> {
  const snap = `bi${n}-cli`;
  const request = c.request(snap);
  const workflowId =
    c.kind === 'workflowId'
      ? `merge-of-${snap}`
      : c.kind === 'child'
        ? `${liveMergeWorkflowId(snap)}-disk-direct`
        : liveMergeWorkflowId(snap);
  const text = c.cliText ? c.cliText(snap) : JSON.stringify(request);
  const input: string[] = [];
  if (text !== null) {
    // Both ways the CLI takes input: a file (always for big inputs), or the argument.
    if (n % 2 === 0 || text.length > 10_000) {
      const file = path.join(dir, `case-${n}.json`);
      writeFileSync(file, text);
      input.push('--input-file', file);
    } else {
      input.push('--input', text);
    }
  }
  const before = storageState();
  const t0 = Date.now();
  const started = await temporal(
    'workflow',
    'start',
    '--task-queue',
    ENGINE_TASK_QUEUE,
    '--type',
    c.kind === 'child' ? 'DiskMergeWorkflow' : 'LiveMergeWorkflow',
    '--workflow-id',
    workflowId,
    ...input,
  );

  if (c.kind === 'notStarted') {
    // Refused by the CLI itself, or by the server at start: no workflow exists.
    const ms = Date.now() - t0;
    timings.push({ n, name: c.name, channel: 'cli', ms });
    expect(started.code).not.toBe(0);
    expect(started.stderr + started.stdout).toMatch(c.cliRefusal!);
    expect(ms).toBeLessThan(SCHEMA_FAST_MS);
    const described = await temporal('workflow', 'describe', '--workflow-id', workflowId);
    expect(described.code).not.toBe(0);
    expect(described.stderr).toMatch(/not found/i);
    expect(storageState()).toEqual(before);
    return;
  }

  expect([started.code, started.stderr]).toEqual([0, '']);
  expectedWorkflows.add(workflowId);
  const failure = await cliFailure(workflowId);
  const ms = Date.now() - t0;
  timings.push({ n, name: c.name, channel: 'cli', ms });
  expect(failure.message).toMatch(c.says);

  if (c.kind === 'schema' || c.kind === 'workflowId' || c.kind === 'child') {
    expect(failure.applicationFailureInfo?.type).toBe('InvalidMergeInput');
    expect(failure.applicationFailureInfo?.nonRetryable).toBe(true);
    expect(failure.message).toMatch(/^invalid merge input: /);
    expect(failure.message!.length).toBeLessThan(2_000); // the field, not the value
    expect(ms).toBeLessThan(SCHEMA_FAST_MS);
    // Refused before any host was asked: no step, no child.
    const events = await cliEventTypes(workflowId);
    expect(events.filter((e) => /ACTIVITY|CHILD_WORKFLOW/.test(e))).toEqual([]);
    expect(events.at(-1)).toBe('EVENT_TYPE_WORKFLOW_EXECUTION_FAILED');
  } else {
    expect(failure.applicationFailureInfo?.type).toBe('DiskMergeFailed');
    for (const [diskId, type] of Object.entries(c.diskTypes!)) {
      const childId = diskMergeWorkflowId(snap, diskId);
      expectedWorkflows.add(childId);
      if (c.kind === 'unreachable') {
        await expectNeverRan(childId);
        continue;
      }
      const child = await cliFailure(childId);
      expect([diskId, child.applicationFailureInfo?.type]).toEqual([diskId, type]);
      expect(child.message).toMatch(/kept$/);
    }
    expectTimely(c, ms);
    await expectChainsUnchanged();
  }
  expect(storageState()).toEqual(before);
}

async function viaClient(c: Case, n: number): Promise<void> {
  const snap = `bi${n}-client`;
  const request = c.request(snap);
  const before = storageState();
  const t0 = Date.now();

  if (c.kind === 'schema' || c.kind === 'notStarted') {
    const err = await merges.startMerge(request as never).then(
      () => undefined,
      (e: unknown) => e,
    );
    const ms = Date.now() - t0;
    timings.push({ n, name: c.name, channel: 'client', ms });
    expect(err).toBeInstanceOf(InvalidMergeRequestError);
    const refused = err as InvalidMergeRequestError;
    expect([...new Set(refused.fields)]).toEqual(c.fields);
    expect(refused.message).toMatch(/^invalid merge request: /);
    expect(refused.message).toMatch(c.says);
    expect(refused.message.length).toBeLessThan(2_000);
    expect(ms).toBeLessThan(1_000);
    // Nothing was sent: no workflow for this snapshot exists.
    const snapshotId = (request as { snapshotId?: unknown } | null)?.snapshotId;
    if (isValidId(snapshotId)) {
      await expect(stack.client.workflow.getHandle(liveMergeWorkflowId(snapshotId)).describe()).rejects.toBeInstanceOf(
        WorkflowNotFoundError,
      );
    }
    expect(storageState()).toEqual(before);
    return;
  }

  let workflowId: string;
  let result: Promise<unknown>;
  if (c.kind === 'workflowId' || c.kind === 'child') {
    // LiveMergeClient always derives the id and starts only LiveMergeWorkflow: a caller using the
    // Temporal client directly can get either wrong.
    workflowId = c.kind === 'child' ? `${liveMergeWorkflowId(snap)}-disk-direct` : `merge-of-${snap}`;
    const type = c.kind === 'child' ? 'DiskMergeWorkflow' : 'LiveMergeWorkflow';
    const handle = await stack.client.workflow.start(type, {
      taskQueue: ENGINE_TASK_QUEUE,
      workflowId,
      args: [request],
    });
    result = handle.result();
  } else {
    const start = await merges.startMerge(request as never);
    expect(start.started).toBe(true);
    workflowId = start.workflowId;
    expect(workflowId).toBe(liveMergeWorkflowId(snap));
    result = merges.result(snap);
  }
  expectedWorkflows.add(workflowId);
  const err = await result.then(
    () => undefined,
    (e: unknown) => e,
  );
  const ms = Date.now() - t0;
  timings.push({ n, name: c.name, channel: 'client', ms });
  expect(err).toBeInstanceOf(WorkflowFailedError);
  const cause = (err as WorkflowFailedError).cause;
  expect(cause).toBeInstanceOf(ApplicationFailure);
  expect(cause!.message).toMatch(c.says);
  if (c.kind === 'workflowId' || c.kind === 'child') {
    expect((cause as ApplicationFailure).type).toBe('InvalidMergeInput');
    expect(cause!.message).toMatch(/^invalid merge input: /);
    expect(ms).toBeLessThan(SCHEMA_FAST_MS);
    const history = await stack.client.workflow.getHandle(workflowId).fetchHistory();
    expect(
      (history.events ?? []).filter(
        (e) => e.activityTaskScheduledEventAttributes || e.startChildWorkflowExecutionInitiatedEventAttributes,
      ),
    ).toEqual([]);
  } else {
    expect((cause as ApplicationFailure).type).toBe('DiskMergeFailed');
    expect(diskIdsOf(request)).toEqual(Object.keys(c.diskTypes!));
    // Each failed disk's outcome names its failure's type.
    const outcomes = (cause as ApplicationFailure).details?.[0] as Array<{ diskId: string; failureType?: string }>;
    expect(Object.fromEntries(outcomes.map((o) => [o.diskId, o.failureType]))).toEqual(c.diskTypes);
    for (const [diskId, type] of Object.entries(c.diskTypes!)) {
      const childId = diskMergeWorkflowId(snap, diskId);
      expectedWorkflows.add(childId);
      if (c.kind === 'unreachable') {
        await expectNeverRan(childId);
        continue;
      }
      const childErr = await stack.client.workflow
        .getHandle(childId)
        .result()
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(childErr).toBeInstanceOf(WorkflowFailedError);
      expect([diskId, ((childErr as WorkflowFailedError).cause as ApplicationFailure).type]).toEqual([diskId, type]);
    }
    expectTimely(c, ms);
    await expectChainsUnchanged();
  }
  expect(storageState()).toEqual(before);
}

/** A disk workflow no host agent picked up: terminated by the merge, naming why, without a task run. */
async function expectNeverRan(childId: string): Promise<void> {
  const handle = stack.client.workflow.getHandle(childId);
  expect((await handle.describe()).status.name).toBe('TERMINATED');
  const events = (await handle.fetchHistory()).events ?? [];
  expect(events.filter((e) => e.workflowTaskStartedEventAttributes)).toEqual([]);
  expect(events.at(-1)?.workflowExecutionTerminatedEventAttributes?.reason).toMatch(
    /did not pick up the merge within 2 s/,
  );
}

function expectTimely(c: Case, ms: number): void {
  if (c.kind === 'unreachable') {
    // Bounded by the merge's pickup timeout: not sooner, and not much later.
    expect(ms).toBeGreaterThanOrEqual(PICKUP_S * 1000 - 250);
    expect(ms).toBeLessThan(PICKUP_S * 1000 + PICKUP_SLACK_MS);
  } else {
    expect(ms).toBeLessThan(HOST_FAST_MS);
  }
}

test('the table holds at least 25 cases, each named once', () => {
  expect(cases.length).toBeGreaterThanOrEqual(25);
  expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
});

describe.each(cases.map((c, i) => [i + 1, c.name, c] as const))('%i. %s', (n, _name, c) => {
  test('through the Temporal CLI', () => viaCli(c, n));
  test('through LiveMergeClient', () => viaClient(c, n));
});

test('nothing else reached the server, and every chain, volume and file is as it was', async () => {
  // Only the workflows the table started on purpose: no refused client request sent anything.
  const listed = new Set<string>();
  for await (const wf of stack.client.workflow.list()) listed.add(wf.workflowId);
  const deadline = Date.now() + 10_000;
  while (listed.size < expectedWorkflows.size && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 200));
    for await (const wf of stack.client.workflow.list()) listed.add(wf.workflowId);
  }
  expect([...listed].sort()).toEqual([...expectedWorkflows].sort());

  await expectChainsUnchanged();
  for (const d of vm.disks)
    for (const v of d.volumeIds)
      expect(Object.keys(snapshotFiles(stack.storageRoot))).toContain(path.join('images', d.diskId, `${v}.qcow2`));
});

/**
 * Running programs (argument arrays only), and a lab VM's QEMU process: its pid file, start and stop.
 * QEMU's pid file is `<runDir>/<vmId>/qemu.pid` and its log `qemu.log` beside it.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';

import { auxQmpSocketPath, qmpSocketPath, vmRunDir } from '../../src/domain/layout';
import { locksOn, readProcLocks } from '../../src/volume-users';
import { fileIdOf } from '../../src/volume-users/file-id';
import { GUEST_CONSOLE_SOCKET } from '../guest/config';
import { requestGuestStop } from '../guest/control';
import { PID_FILE, readManifestIfAny } from './manifest';
import { procStatFields } from './proc-stat';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export class LabCommandError extends Error {
  constructor(
    message: string,
    readonly result?: RunResult,
  ) {
    super(message);
    this.name = 'LabCommandError';
  }
}

/** Runs a program to its end; resolves with its exit status and output (a non-zero exit is not an error). */
export function run(program: string, args: readonly string[], timeoutMs = 120_000): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new LabCommandError(`cannot run ${program}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function describeRun(program: string, args: readonly string[], r: RunResult): string {
  const status = r.signal ? `signal ${r.signal}` : `exit ${r.code}`;
  const out = `${r.stdout}${r.stderr}`.trim();
  return `${program} ${args.join(' ')} failed (${status})${out ? `: ${out}` : ''}`;
}

export async function runOk(program: string, args: readonly string[]): Promise<RunResult> {
  const r = await run(program, args);
  if (r.code !== 0) throw new LabCommandError(describeRun(program, args, r), r);
  return r;
}

export function canConnect(socketPath: string, timeoutMs = 1_000): Promise<boolean> {
  return probeSocket(socketPath, timeoutMs, (sock, done) => sock.on('connect', () => done(true)));
}

/**
 * Connects to `socketPath` and resolves with what `watch` decides, false on an error, a close or
 * after `timeoutMs`; the connection is closed either way.
 */
function probeSocket(
  socketPath: string,
  timeoutMs: number,
  watch: (sock: net.Socket, done: (ok: boolean) => void) => void,
): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.createConnection(socketPath);
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    watch(sock, done);
    sock.on('error', () => done(false));
    sock.on('close', () => done(false));
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export function pidFilePath(runDir: string, vmId: string): string {
  return path.join(vmRunDir(runDir, vmId), PID_FILE);
}

/**
 * Whether `pid` is a live QEMU started with this pid file: its command line names the file. A
 * zombie has an empty command line, so it counts as gone; so does a reused pid.
 */
export async function isOurQemu(pid: number, pidFile: string): Promise<boolean> {
  try {
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.split('\0').includes(pidFile);
  } catch {
    return false;
  }
}

async function readPidFile(pidFile: string): Promise<number | undefined> {
  try {
    const text = (await fs.readFile(pidFile, 'utf8')).trim();
    const pid = Number(text);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The pid of the lab VM's live QEMU, or undefined when none runs. */
export async function runningLabVmPid(runDir: string, vmId: string): Promise<number | undefined> {
  const root = path.resolve(runDir);
  const pidFile = pidFilePath(root, vmId);
  const candidates: number[] = [];
  const fromFile = await readPidFile(pidFile);
  if (fromFile !== undefined) candidates.push(fromFile);
  const manifest = await readManifestIfAny(root, vmId);
  if (manifest && manifest.pid !== fromFile) candidates.push(manifest.pid);
  for (const pid of candidates) if (await isOurQemu(pid, pidFile)) return pid;
  return undefined;
}

/** The state letter and start time (field 22) from `/proc/<pid>/stat`, or undefined when the pid is gone. */
function procStat(pid: number): { state: string; startTime: string } | undefined {
  const fields = procStatFields(pid);
  return fields && { state: fields[0] ?? '', startTime: fields[19] ?? '' };
}

/**
 * Waits until `pid` has closed its files (gone, or a zombie). Its cmdline empties earlier, while
 * its QMP sockets still listen and its image locks are still held.
 */
async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  const first = procStat(pid);
  if (first === undefined) return true;
  for (;;) {
    const now = procStat(pid);
    if (now === undefined || now.startTime !== first.startTime || now.state === 'Z' || now.state === 'X') return true;
    if (Date.now() >= deadline) return false;
    await sleep(20);
  }
}

/** Kills the lab VM's QEMU as a crash would (SIGKILL), its pid file and sockets left behind; resolves once it has closed its files. */
export async function crashLabVm(runDir: string, vmId: string): Promise<void> {
  const root = path.resolve(runDir);
  const pid = await runningLabVmPid(root, vmId);
  if (pid === undefined) throw new Error(`lab VM ${vmId} is not running`);
  signal(pid, 'SIGKILL');
  if (!(await waitForExit(pid, 10_000))) throw new Error(`QEMU pid ${pid} did not exit after SIGKILL`);
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

export async function killQemu(pid: number): Promise<void> {
  signal(pid, 'SIGTERM');
  if (await waitForExit(pid, 3_000)) return;
  signal(pid, 'SIGKILL');
  if (!(await waitForExit(pid, 10_000))) throw new Error(`QEMU pid ${pid} did not exit after SIGKILL`);
}

async function tail(file: string, max = 2_000): Promise<string> {
  try {
    const text = await fs.readFile(file, 'utf8');
    return text.length > max ? `…${text.slice(-max)}` : text;
  } catch {
    return '';
  }
}

/**
 * Whether a QMP monitor answers on `socketPath` with its greeting. QEMU listens on its QMP sockets
 * before it opens its images, and greets only from its main loop, once every device is set up: a
 * socket that merely accepts can belong to a QEMU that is about to fail on an image lock.
 */
function greets(socketPath: string, timeoutMs = 1_000): Promise<boolean> {
  let seen = '';
  return probeSocket(socketPath, timeoutMs, (sock, done) =>
    sock.on('data', (d: Buffer) => {
      seen += d.toString();
      if (seen.includes('\n')) done(seen.includes('"QMP"'));
    }),
  );
}

async function everyGreets(sockets: readonly string[]): Promise<boolean> {
  for (const s of sockets) if (!(await greets(s))) return false;
  return true;
}

/**
 * Starts QEMU with `args`, detached from this process, its output appended to `logPath`. Resolves
 * with its pid once the QMP monitor on every one of `sockets` greets (QEMU set up every device and
 * opened every image) and `pidFile` names it; a QEMU that started but got no further is killed.
 */
export async function startQemu(
  args: readonly string[],
  pidFile: string,
  logPath: string,
  sockets: readonly string[],
): Promise<number> {
  const logFd = openSync(logPath, 'a');
  let exited: string | undefined;
  let pid: number | undefined;
  try {
    const child = spawn('qemu-system-x86_64', args, {
      detached: true,
      stdio: ['ignore', logFd, logFd],
    });
    child.on('error', (err) => (exited = `cannot start qemu-system-x86_64: ${err.message}`));
    child.on(
      'exit',
      (code, sig) => (exited = `QEMU exited during start-up (${sig ? `signal ${sig}` : `exit ${code}`})`),
    );
    child.unref();
    pid = child.pid;
  } finally {
    closeSync(logFd);
  }
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      await sleep(50);
      if (exited !== undefined) throw new Error(`${exited}; ${logPath}: ${await tail(logPath)}`);
      if (pid !== undefined && (await everyGreets(sockets))) break;
      if (Date.now() >= deadline)
        throw new Error(`QEMU's QMP monitors did not greet within 30 s; ${logPath}: ${await tail(logPath)}`);
    }
    const fromFile = await readPidFile(pidFile);
    if (fromFile !== pid) throw new Error(`QEMU's pid file ${pidFile} names ${fromFile}, expected ${pid}`);
    return pid;
  } catch (err) {
    if (pid !== undefined && (await isOurQemu(pid, pidFile))) await killQemu(pid).catch(() => undefined);
    throw err;
  }
}

export interface StopLabVmOptions {
  /**
   * For a VM running the lab guest (default true): first ask the guest to stop (its writer
   * flushes, reports DONE and powers off, which ends QEMU), and kill QEMU only when it has not
   * exited within `guestTimeoutMs`. False, or a VM without a guest: SIGTERM, SIGKILL after 3 s.
   */
  graceful?: boolean;
  guestTimeoutMs?: number;
}

/** How the VM's QEMU ended: it was not running, its guest powered off, or it was killed. */
export type LabVmStopped = 'not-running' | 'guest-powered-off' | 'killed';

/** Stops the VM's QEMU and waits for its end. Idempotent. */
export async function stopLabVm(runDir: string, vmId: string, options: StopLabVmOptions = {}): Promise<LabVmStopped> {
  const root = path.resolve(runDir);
  const pidFile = pidFilePath(root, vmId);
  const pid = await runningLabVmPid(root, vmId);
  let how: LabVmStopped = 'not-running';
  if (pid !== undefined) {
    const guest = (await readManifestIfAny(root, vmId))?.guest;
    const timeoutMs = options.guestTimeoutMs ?? 20_000;
    if (guest && options.graceful !== false) {
      const answer = await requestGuestStop(guest.consoleSocket, timeoutMs);
      if (answer !== 'unreachable' && (await waitForExit(pid, answer === 'closed' ? 5_000 : 0)))
        how = 'guest-powered-off';
    }
    if (how === 'not-running') {
      await killQemu(pid);
      how = 'killed';
    }
  }
  // After a SIGKILL QEMU leaves its pid file and sockets behind.
  await fs.rm(pidFile, { force: true });
  await fs.rm(qmpSocketPath(root, vmId), { force: true });
  await fs.rm(auxQmpSocketPath(root, vmId), { force: true });
  await fs.rm(path.join(vmRunDir(root, vmId), GUEST_CONSOLE_SOCKET), { force: true });
  return how;
}

/** The pid of a running `qemu-img commit` of the image `top` (an offline merge's), if any. */
export async function imageCommitPid(top: string): Promise<number | undefined> {
  for (const pid of (await fs.readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    const argv = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').then(
      (s) => s.split('\0'),
      (): string[] => [],
    );
    if (path.basename(argv[0] ?? '') === 'qemu-img' && argv[1] === 'commit' && argv.includes(top)) return Number(pid);
  }
  return undefined;
}

/**
 * The pid of a running `qemu-img commit` of `top` once it holds locks on the image (it takes them
 * right after it opens it): a test that freezes it then knows a VM start must fail on them.
 */
export async function lockedImageCommitPid(top: string): Promise<number | undefined> {
  const pid = await imageCommitPid(top);
  if (pid === undefined) return undefined;
  const file = fileIdOf(await fs.stat(top, { bigint: true }));
  return locksOn(readProcLocks(), file).length > 0 ? pid : undefined;
}

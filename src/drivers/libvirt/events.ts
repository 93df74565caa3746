import { type ChildProcess, spawn } from 'node:child_process';
import * as readline from 'node:readline';

/** A block job's end as libvirt's `block-job-2` event told it. */
export type BlockJobEnding = 'completed' | 'failed' | 'canceled';

type Waiter = () => void;

const LINE = /^event '([^']+)' for domain '([^']*)': (.*)$/;
const BLOCK_JOB = /^.* for (\S+) (completed|failed|canceled|ready)$/;
/** How long after the listener died it is started again (libvirtd restarting). */
const RESPAWN_MS = 500;

/**
 * One long-lived `virsh event --all --loop` for every domain: each event wakes the waits on its
 * domain. The listener dies with libvirtd and libvirt does not replay what it missed, so each
 * (re)start wakes every wait too: they read the state again. Polling stays the backstop.
 */
export class LibvirtEvents {
  private child?: ChildProcess;
  private closed = false;
  private respawn?: NodeJS.Timeout;
  private readonly waiters = new Map<string, Set<Waiter>>();
  /** The last block job end seen per `domain/target`, for the outcome's reason (chains decide). */
  private readonly endings = new Map<string, BlockJobEnding>();

  constructor(private readonly uri: string) {}

  /** Calls `wake` on the domain's next event (or listener restart); returns the unsubscribe. */
  onChange(domain: string, wake: Waiter): () => void {
    this.start();
    let set = this.waiters.get(domain);
    if (!set) this.waiters.set(domain, (set = new Set()));
    set.add(wake);
    return () => {
      set.delete(wake);
      if (set.size === 0 && this.waiters.get(domain) === set) this.waiters.delete(domain);
    };
  }

  /**
   * The domain's next event, `timeoutMs` or the signal's abort, whichever comes first, armed at
   * once; `cancel` stops waiting.
   */
  nextChange(domain: string, timeoutMs: number, signal?: AbortSignal): { woken: Promise<void>; cancel(): void } {
    let cancel = (): void => undefined;
    const woken = new Promise<void>((resolve) => {
      const timer = setTimeout(done, timeoutMs);
      const off = this.onChange(domain, done);
      signal?.addEventListener('abort', done, { once: true });
      cancel = done;
      function done(): void {
        clearTimeout(timer);
        off();
        signal?.removeEventListener('abort', done);
        resolve();
      }
    });
    return { woken, cancel };
  }

  /** The last end libvirt announced for the disk's block job since `forget`, if one was seen. */
  ending(domain: string, target: string): BlockJobEnding | undefined {
    return this.endings.get(`${domain}/${target}`);
  }

  forget(domain: string, target: string): void {
    this.endings.delete(`${domain}/${target}`);
  }

  start(): void {
    if (this.child || this.closed) return;
    const child = spawn('virsh', ['-q', '-c', this.uri, 'event', '--all', '--loop'], {
      stdio: ['ignore', 'pipe', 'ignore'],
      env: { ...process.env, LC_ALL: 'C' },
    });
    this.child = child;
    readline.createInterface({ input: child.stdout! }).on('line', (line) => this.onLine(line));
    child.on('error', () => undefined);
    child.on('exit', () => {
      if (this.child === child) this.child = undefined;
      this.wakeAll();
      if (!this.closed) this.respawn = setTimeout(() => this.start(), RESPAWN_MS);
    });
    // A new listener may have missed events: every wait reads again.
    this.wakeAll();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.respawn);
    this.child?.kill();
    this.child = undefined;
    this.wakeAll();
  }

  private onLine(line: string): void {
    const m = LINE.exec(line);
    if (!m) return;
    const [, event, domain, detail] = m;
    if (event === 'block-job-2') {
      const j = BLOCK_JOB.exec(detail);
      if (j && j[2] !== 'ready') this.endings.set(`${domain}/${j[1]}`, j[2] as BlockJobEnding);
    }
    for (const wake of [...(this.waiters.get(domain) ?? [])]) wake();
  }

  private wakeAll(): void {
    for (const set of this.waiters.values()) for (const wake of [...set]) wake();
  }
}

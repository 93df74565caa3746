import { QmpTimeoutError } from './errors';

interface PendingCommand {
  command: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** The commands sent and not yet answered, by id; each rejects on its own timeout. */
export class PendingCommands {
  private readonly byId = new Map<string, PendingCommand>();

  /** Registers `id` before its line is sent; the promise settles with its reply or its timeout. */
  add(id: string, command: string, timeoutMs: number): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.byId.delete(id)) reject(new QmpTimeoutError(command, timeoutMs));
      }, timeoutMs);
      this.byId.set(id, { command, resolve, reject, timer });
    });
  }

  /** Removes and returns the command of a reply's id; undefined for an unknown (late) one. */
  take(id: string | number): PendingCommand | undefined {
    const key = String(id);
    const pending = this.byId.get(key);
    if (pending === undefined) return undefined;
    this.byId.delete(key);
    clearTimeout(pending.timer);
    return pending;
  }

  /** Rejects every command still waiting, each with the error made for it. */
  rejectAll(errorFor: (command: string) => Error): void {
    const all = [...this.byId.values()];
    this.byId.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(errorFor(p.command));
    }
  }
}

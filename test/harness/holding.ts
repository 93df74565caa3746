import * as fs from 'node:fs';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until process `pid` has `file` open: a process's fds appear some time after its start. */
export async function holding(pid: number, file: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      throw new Error(`process ${pid} is gone before it opened ${file}`);
    }
    const links = fds.map((fd) => {
      try {
        return fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        return '';
      }
    });
    if (links.includes(file)) return;
    if (Date.now() > deadline) throw new Error(`process ${pid} did not open ${file}`);
    await sleep(25);
  }
}

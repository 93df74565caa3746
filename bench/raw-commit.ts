import * as net from 'node:net';

/**
 * The overhead baseline: the same block commit done by a bare script talking QMP on the VM's socket,
 * nothing else: start the job, wait for QEMU's event (for an active commit: READY, then
 * block-job-complete, then COMPLETED), done. No chain reads, no checks, no bookkeeping.
 */
export interface RawCommit {
  socket: string;
  jobId: string;
  device: string;
  topNode: string;
  baseNode: string;
  backingFile?: string;
  active: boolean;
  /** Bytes per second; 0 or absent is unlimited. */
  speed?: number;
}

/** Milliseconds from sending block-commit to the BLOCK_JOB_COMPLETED event (the connection is set up before). */
export function rawCommit(r: RawCommit, timeoutMs = 600_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(r.socket);
    let buf = '';
    let t0 = 0;
    const timer = setTimeout(
      () => fail(new Error(`raw commit ${r.jobId}: no completion within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const send = (execute: string, args?: Record<string, unknown>): void => {
      sock.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
    };
    function fail(err: Error): void {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    }
    sock.setEncoding('utf8');
    sock.on('error', fail);
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const msg = JSON.parse(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        const data = (msg.data ?? {}) as Record<string, unknown>;
        if ('QMP' in msg) send('qmp_capabilities');
        else if ('error' in msg) fail(new Error(`raw commit ${r.jobId}: ${JSON.stringify(msg.error)}`));
        else if ('return' in msg && t0 === 0) {
          t0 = performance.now();
          send('block-commit', {
            'job-id': r.jobId,
            device: r.device,
            'top-node': r.topNode,
            'base-node': r.baseNode,
            ...(r.backingFile ? { 'backing-file': r.backingFile } : {}),
            ...(r.speed ? { speed: r.speed } : {}),
          });
        } else if (msg.event === 'BLOCK_JOB_READY' && data.device === r.jobId)
          send('block-job-complete', { device: r.jobId });
        else if (msg.event === 'BLOCK_JOB_COMPLETED' && data.device === r.jobId) {
          const elapsed = performance.now() - t0;
          clearTimeout(timer);
          sock.destroy();
          if (data.error) reject(new Error(`raw commit ${r.jobId} failed: ${String(data.error)}`));
          else resolve(elapsed);
        }
      }
    });
  });
}

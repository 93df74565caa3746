import { type ChildProcess, spawn } from 'node:child_process';

import type { LibvirtLabVm } from '../../lab/libvirt/domain';

/** One QEMU block job as its JOB_STATUS_CHANGE events tell it (milliseconds since the epoch). */
export interface QemuJob {
  id: string;
  /** The disk target libvirt names the job after (`commit-vda-libvirt-3-format`). */
  target: string;
  created: number;
  ready?: number;
  concluded?: number;
}

const EVENT = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\+0000: event JOB_STATUS_CHANGE for domain '[^']*': (\{.*\})$/;

/**
 * The block jobs QEMU itself creates in a libvirt domain, from `virsh qemu-monitor-event` (QMP
 * events relayed by libvirt; listening does not taint the domain): how many per disk, and how long
 * each ran. The product's own job ids never reach QEMU under libvirt, so this counts what QEMU ran.
 */
export class QemuJobs {
  readonly jobs = new Map<string, QemuJob>();
  /** `created` events per disk target (a job id libvirt used twice counts twice). */
  private readonly createdPerTarget: Record<string, number> = {};
  private buffer = '';

  private constructor(private readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      this.buffer += chunk;
      const lines = this.buffer.split('\n');
      this.buffer = lines.pop() ?? '';
      for (const line of lines) this.take(line.trim());
    });
  }

  /** Starts listening; resolves once `virsh` had time to register (it prints nothing until an event). */
  static async listen(vm: Pick<LibvirtLabVm, 'uri' | 'vmId'>): Promise<QemuJobs> {
    const child = spawn(
      'virsh',
      ['-c', vm.uri, 'qemu-monitor-event', vm.vmId, '--event', 'JOB_STATUS_CHANGE', '--loop', '--timestamp'],
      { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, LC_ALL: 'C' } },
    );
    const jobs = new QemuJobs(child);
    await new Promise((r) => setTimeout(r, 1_000));
    if (child.exitCode !== null) throw new Error(`virsh qemu-monitor-event ended (exit ${child.exitCode})`);
    return jobs;
  }

  private take(line: string): void {
    const m = EVENT.exec(line);
    if (!m) return;
    const at = Date.parse(`${m[1].replace(' ', 'T')}Z`);
    const data = JSON.parse(m[2]) as { status?: unknown; id?: unknown };
    if (typeof data.id !== 'string' || typeof data.status !== 'string') return;
    const target = /^[a-z]+-(vd[a-z]+)-/.exec(data.id)?.[1] ?? data.id;
    if (data.status === 'created') {
      this.createdPerTarget[target] = (this.createdPerTarget[target] ?? 0) + 1;
      this.jobs.set(data.id, { id: data.id, target, created: at });
    }
    const job = this.jobs.get(data.id) ?? { id: data.id, target, created: at };
    if (data.status === 'ready') job.ready ??= at;
    if (data.status === 'concluded') job.concluded = at;
    this.jobs.set(data.id, job);
  }

  /** Jobs QEMU created per disk target. */
  perTarget(): Record<string, number> {
    return { ...this.createdPerTarget };
  }

  /** Stops the listener (by its own child's pid). */
  stop(): void {
    if (this.child.exitCode === null) this.child.kill('SIGTERM');
  }
}

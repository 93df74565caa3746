import { execFile } from 'node:child_process';

import { VmNotFoundError } from '../errors';

/** How long one `virsh` call may take: a libvirtd that just started probes QEMU's capabilities first. */
export const VIRSH_TIMEOUT_MS = 60_000;

/** libvirt refused a request (an error it answered with, not a connection problem). */
export class VirshCommandError extends Error {
  override name = 'VirshCommandError';
  constructor(
    readonly args: readonly string[],
    /** libvirt's message without virsh's `error: ` prefixes. */
    readonly detail: string,
  ) {
    super(`virsh ${args.join(' ')}: ${detail}`);
  }
}

/** virsh could not reach libvirtd (not running, restarting): worth a retry, says nothing of the VM. */
export class LibvirtUnreachableError extends Error {
  override name = 'LibvirtUnreachableError';
}

/** One `virsh -c URI ...` call at a time, by argument array. */
export class Virsh {
  constructor(
    readonly uri: string,
    private readonly timeoutMs = VIRSH_TIMEOUT_MS,
  ) {}

  /** The command's stdout; throws VmNotFound for a domain libvirt does not know. */
  run(args: readonly string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(
        'virsh',
        ['-q', '-c', this.uri, ...args],
        { timeout: this.timeoutMs, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, LC_ALL: 'C' } },
        (err, stdout, stderr) => {
          if (!err) return resolve(stdout);
          reject(classify(args, stderr, err));
        },
      );
    });
  }
}

function classify(args: readonly string[], stderr: string, err: Error): Error {
  const detail = stderr
    .split('\n')
    .map((l) => l.replace(/^error:\s*/, '').trim())
    .filter(Boolean)
    .join('; ');
  if (/failed to get domain|Domain not found|no domain with matching name/i.test(detail))
    return new VmNotFoundError(`libvirt has no domain: ${detail}`);
  if (/failed to connect to the hypervisor|Cannot recv data|End of file while reading|Connection reset/i.test(detail))
    return new LibvirtUnreachableError(`libvirt at ${args.length > 0 ? 'virsh' : ''} unreachable: ${detail}`);
  if (detail === '') return new LibvirtUnreachableError(`virsh ${args.join(' ')} failed: ${err.message}`);
  return new VirshCommandError(args, detail);
}

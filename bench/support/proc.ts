import { readFileSync } from 'node:fs';

import { procStatFields } from '../../lab/vm/proc-stat';

/** A process and its descendants, from /proc (empty when it is gone). */
export function processTree(pid: number): number[] {
  const out: number[] = [];
  const visit = (p: number): void => {
    try {
      const children = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim();
      out.push(p);
      for (const c of children ? children.split(/\s+/) : []) visit(Number(c));
    } catch {
      // gone meanwhile
    }
  };
  visit(pid);
  return out;
}

/**
 * Proportional set size of a process, in bytes: its private pages plus its share of pages it
 * shares. Summed over PostgreSQL's backends it counts the shared buffers once, where RSS would
 * count them once per backend.
 */
export function pssOf(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** User + system CPU seconds of a process, from /proc/<pid>/stat. */
export function cpuSecOf(pid: number): number {
  const fields = procStatFields(pid);
  return fields ? (Number(fields[11]) + Number(fields[12])) / 100 : 0; // utime, stime in clock ticks (100/s)
}

/**
 * CPU seconds of a process tree: each live process's own, plus what the root's ended children
 * used (a database's backends come and go).
 */
export function cpuSecOfTree(pid: number): number {
  const fields = procStatFields(pid);
  if (!fields) return 0;
  const endedChildren = (Number(fields[13]) + Number(fields[14])) / 100; // cutime, cstime
  return endedChildren + sum(processTree(pid).map(cpuSecOf));
}

export function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

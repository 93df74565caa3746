import { execFileSync } from 'node:child_process';

/**
 * The cluster's network: a "core" namespace holding a bridge at CORE_IP (the Temporal services,
 * PostgreSQL and the engine workers), and one namespace per hypervisor host joined to that bridge
 * by a veth pair, each with its own address. Taking a host's link down on the bridge side is a
 * network partition of that host. Every name starts with the run's prefix, so runs never collide;
 * 10.77.0.0/16 is used by no route of the machine.
 */
export const CORE_IP = '10.77.1.1';
const PREFIX_LEN = 24;

export interface HostNet {
  hostId: string;
  netns: string;
  ip: string;
  /** The host's link on the core side of its veth pair (inside the core namespace). */
  coreLink: string;
}

export interface ClusterNetwork {
  prefix: string;
  coreNetns: string;
  hosts: HostNet[];
}

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The argument vector that runs `argv` inside network namespace `netns`. */
export function inNetns(netns: string, argv: string[]): string[] {
  return ['ip', 'netns', 'exec', netns, ...argv];
}

/** A short random prefix for this run's namespaces and links (interface names are at most 15 bytes). */
export function runPrefix(): string {
  return `lm${Math.floor(Math.random() * 0xffffff)
    .toString(16)
    .padStart(6, '0')}`;
}

export function createClusterNetwork(prefix: string, hostIds: string[]): ClusterNetwork {
  const coreNetns = `${prefix}-core`;
  const net: ClusterNetwork = { prefix, coreNetns, hosts: [] };
  try {
    ip(['netns', 'add', coreNetns]);
    ip(['-n', coreNetns, 'link', 'set', 'lo', 'up']);
    ip(['-n', coreNetns, 'link', 'add', 'br0', 'type', 'bridge']);
    ip(['-n', coreNetns, 'addr', 'add', `${CORE_IP}/${PREFIX_LEN}`, 'dev', 'br0']);
    ip(['-n', coreNetns, 'link', 'set', 'br0', 'up']);
    hostIds.forEach((hostId, i) => {
      const host: HostNet = { hostId, netns: `${prefix}-${hostId}`, ip: `10.77.1.${11 + i}`, coreLink: `v${i + 1}` };
      ip(['netns', 'add', host.netns]);
      net.hosts.push(host);
      ip(['-n', host.netns, 'link', 'set', 'lo', 'up']);
      // Made in the root namespace under run-unique names, then each end moved and renamed.
      const a = `${prefix}a${i + 1}`;
      const b = `${prefix}b${i + 1}`;
      ip(['link', 'add', a, 'type', 'veth', 'peer', 'name', b]);
      ip(['link', 'set', a, 'netns', coreNetns]);
      ip(['link', 'set', b, 'netns', host.netns]);
      ip(['-n', coreNetns, 'link', 'set', a, 'name', host.coreLink]);
      ip(['-n', coreNetns, 'link', 'set', host.coreLink, 'master', 'br0']);
      ip(['-n', coreNetns, 'link', 'set', host.coreLink, 'up']);
      ip(['-n', host.netns, 'link', 'set', b, 'name', 'eth0']);
      ip(['-n', host.netns, 'addr', 'add', `${host.ip}/${PREFIX_LEN}`, 'dev', 'eth0']);
      ip(['-n', host.netns, 'link', 'set', 'eth0', 'up']);
    });
    return net;
  } catch (err) {
    deleteClusterNetwork(net);
    throw err;
  }
}

/** Cuts (down) or heals (up) a host's link to the cluster. */
export function setHostLink(net: ClusterNetwork, hostId: string, state: 'up' | 'down'): void {
  const host = net.hosts.find((h) => h.hostId === hostId);
  if (!host) throw new Error(`no host ${hostId} in this cluster`);
  ip(['-n', net.coreNetns, 'link', 'set', host.coreLink, state]);
}

/** Deletes the namespaces (their links go with them); names that are already gone are skipped. */
export function deleteClusterNetwork(net: { coreNetns: string; hosts: { netns: string }[] }): void {
  const existing = new Set(listNetns());
  for (const ns of [...net.hosts.map((h) => h.netns), net.coreNetns]) {
    if (existing.has(ns)) ip(['netns', 'delete', ns]);
  }
}

export function listNetns(): string[] {
  return ip(['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter(Boolean);
}

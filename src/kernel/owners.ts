/**
 * Who owns a local port: the process whose socket listens on it (TCP) or is
 * bound to it (UDP), in any network namespace, from /proc/<pid>/net/* and
 * the processes' socket fds. Used to name the services of packet drops,
 * which happen in softirq context with no process at hand.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { namespaceProcesses } from './listeners.js';

export interface PortOwner {
  netns: number;
  port: number;
  protocol: 'tcp' | 'udp';
  comm: string;
  pid: number;
}

const TCP_LISTEN = '0A';

/** local port -> socket inode, from a /proc/net/{tcp,udp}{,6} text (TCP: listening sockets only). */
export function boundPorts(text: string, tcp: boolean): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    if (tcp && f[3] !== TCP_LISTEN) continue;
    out.set(Number.parseInt(f[1].split(':')[1], 16), Number(f[9]));
  }
  return out;
}

/** Owners of the given ports (all namespaces); ports nobody holds are absent. */
export function portOwners(ports: ReadonlySet<number>): PortOwner[] {
  if (ports.size === 0) return [];
  const inodes = new Map<number, Omit<PortOwner, 'comm' | 'pid'>>();
  for (const [pid, netns] of namespaceProcesses()) {
    for (const [file, tcp] of [
      ['tcp', true],
      ['tcp6', true],
      ['udp', false],
      ['udp6', false],
    ] as const) {
      let text: string;
      try {
        text = readFileSync(`/proc/${pid}/net/${file}`, 'utf8');
      } catch {
        continue;
      }
      for (const [port, inode] of boundPorts(text, tcp)) {
        if (ports.has(port) && inode > 0) inodes.set(inode, { netns, port, protocol: tcp ? 'tcp' : 'udp' });
      }
    }
  }
  if (inodes.size === 0) return [];
  const out: PortOwner[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (!m) continue;
      const inode = Number(m[1]);
      const hit = inodes.get(inode);
      if (!hit) continue;
      let comm = '';
      try {
        comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
      } catch {
        /* it ended */
      }
      out.push({ ...hit, comm, pid: Number(pid) });
      inodes.delete(inode);
    }
    if (inodes.size === 0) break;
  }
  return out;
}

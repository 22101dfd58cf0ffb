/**
 * Every TCP socket listening on this host, in every network namespace: for
 * each namespace one process's /proc/<pid>/net/tcp and tcp6 (state 0A).
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

export interface Listener {
  netns: number;
  port: number;
}

const LISTEN = '0A';

export function netnsOf(pid: string): number | undefined {
  try {
    const m = /^net:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/ns/net`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined; // the process ended, or is not ours to look at
  }
}

/** Ports in LISTEN state in a /proc/net/tcp{,6} text. */
export function listeningPorts(text: string): number[] {
  const ports: number[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 3 && f[3] === LISTEN) ports.push(Number.parseInt(f[1].split(':')[1], 16));
  }
  return ports;
}

/** One process of every network namespace that has one: [pid, netns inode]. */
export function namespaceProcesses(): [string, number][] {
  const seen = new Set<number>();
  const out: [string, number][] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    const netns = netnsOf(pid);
    if (netns === undefined || seen.has(netns)) continue;
    seen.add(netns);
    out.push([pid, netns]);
  }
  return out;
}

export function listeners(): Listener[] {
  const out = new Map<string, Listener>();
  for (const [pid, netns] of namespaceProcesses()) {
    for (const file of ['tcp', 'tcp6']) {
      let text: string;
      try {
        text = readFileSync(`/proc/${pid}/net/${file}`, 'utf8');
      } catch {
        continue;
      }
      for (const port of listeningPorts(text)) out.set(`${netns}:${port}`, { netns, port });
    }
  }
  return [...out.values()];
}

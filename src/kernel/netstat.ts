/**
 * The kernel's own TCP counters of drops that never reach skb:kfree_skb: a
 * SYN or final ACK refused because a listener's accept queue is full is
 * freed with consume_skb, and only counted in TcpExt ListenOverflows /
 * ListenDrops (per network namespace, /proc/<pid>/net/netstat).
 */
import { readFileSync } from 'node:fs';
import { namespaceProcesses } from './listeners.js';

export interface ListenCounters {
  netns: number;
  overflows: number;
  drops: number;
}

/** TcpExt fields of a /proc/net/netstat text (a field this kernel lacks is undefined). */
export function tcpExt(text: string): Partial<Record<string, number>> {
  const lines = text.split('\n');
  for (let i = 0; i + 1 < lines.length; i++) {
    if (!lines[i].startsWith('TcpExt:') || !lines[i + 1].startsWith('TcpExt:')) continue;
    const names = lines[i].split(/\s+/).slice(1);
    const values = lines[i + 1].split(/\s+/).slice(1).map(Number);
    return Object.fromEntries(names.map((n, j) => [n, values[j]]));
  }
  return {};
}

/** ListenOverflows and ListenDrops of every network namespace that has a process. */
export function listenCounters(): ListenCounters[] {
  const out = new Map<number, ListenCounters>();
  for (const [pid, netns] of namespaceProcesses()) {
    try {
      const t = tcpExt(readFileSync(`/proc/${pid}/net/netstat`, 'utf8'));
      out.set(netns, { netns, overflows: t.ListenOverflows ?? 0, drops: t.ListenDrops ?? 0 });
    } catch {
      /* the process ended */
    }
  }
  return [...out.values()];
}

/** What grew between two readings (namespaces that appeared count from 0). */
export function listenDelta(before: ListenCounters[], after: ListenCounters[]): ListenCounters[] {
  const b = new Map(before.map((c) => [c.netns, c]));
  return after
    .map((a) => ({
      netns: a.netns,
      overflows: a.overflows - (b.get(a.netns)?.overflows ?? 0),
      drops: a.drops - (b.get(a.netns)?.drops ?? 0),
    }))
    .filter((c) => c.overflows > 0 || c.drops > 0);
}

/**
 * packet-drop-probe: the skb:kfree_skb tracepoint counts every dropped
 * packet in the kernel, by (location, reason, flow), into the per-CPU map
 * `drops`; cgroup programs count each local port's packets into `pkts` for
 * the per-1,000-packets rates. Kernel side: bpf/drops.bpf.c. Report:
 * src/report/drops.ts.
 */
import type { BpfObject } from '../native.js';
import { DKEY_RADDR, DKEY_RPORT, STAT__COUNT } from '../records.js';
import type { ProbeDefinition } from '../pipeline/session.js';
import { DEFAULT_IDLE_MS } from '../pipeline/map-aging.js';
import { usageError } from '../errors.js';
import { applyFilter } from '../filter/kernel.js';
import type { ResolvedFilter } from '../filter/resolve.js';
import { tracepointHasField } from '../kernel/features.js';

export interface DropOptions {
  filter: ResolvedFilter;
  /** distinct (location, reason, flow) keys the kernel counts; past that, drops count in the total only */
  maxKeys: number;
}

/** Max entries of the `pkts` map (bpf/drops.bpf.c): one per local port, protocol and netns. */
const PKTS_MAX_ENTRIES = 16384;
/** Expired keys kept in user space per key the kernel map can hold. */
const KEPT_PER_KERNEL_KEY = 4;

/**
 * A drop key with its remote address and port zeroed: the drops of every
 * peer of one (location, reason, local side) together, which keeps the
 * totals by reason, function, layer and service exact.
 */
export function coarsenDropKey(key: Uint8Array): Uint8Array {
  const c = Uint8Array.from(key);
  c.fill(0, DKEY_RPORT, DKEY_RPORT + 2);
  c.fill(0, DKEY_RADDR, DKEY_RADDR + 16);
  return c;
}

/**
 * How long a drop key (and a packet count key) may stay unchanged before it
 * moves out of the kernel map: 60 s, or MESHPROBE_DROP_KEY_IDLE_MS (tests).
 */
export function dropKeyIdleMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.MESHPROBE_DROP_KEY_IDLE_MS;
  if (v === undefined || v === '') return DEFAULT_IDLE_MS;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 100)
    throw usageError(`MESHPROBE_DROP_KEY_IDLE_MS=${v}: a whole number of milliseconds, >= 100`);
  return n;
}

export const dropProbe: ProbeDefinition<DropOptions> = {
  name: 'packet-drop-probe',
  object: 'drops',
  statCount: STAT__COUNT,
  hooks: {
    'packet drops': [
      // typed arguments: the sk_buff and sock fields are plain loads, not a helper call each
      { name: 'tp_btf:kfree_skb', kind: 'tp_btf', target: 'skb/kfree_skb', programs: ['drops_kfree_skb_btf'] },
      { name: 'tracepoint:skb/kfree_skb', kind: 'tracepoint', target: 'skb/kfree_skb', programs: ['drops_kfree_skb'] },
    ],
    // packets per local port, for drops per 1,000 packets of a service
    'service packets': [
      {
        name: 'cgroup_skb:ingress+egress',
        kind: 'cgroup_skb',
        target: 'cgroup2',
        programs: ['drops_pkt_in', 'drops_pkt_out'],
        requiresKfunc: 'bpf_cast_to_kern_ctx',
      },
      // before 6.2 a cgroup_skb program cannot reach the socket's network namespace
      {
        name: 'cgroup_skb:ingress+egress (by port)',
        kind: 'cgroup_skb',
        target: 'cgroup2',
        programs: ['drops_pkt_in_port', 'drops_pkt_out_port'],
        degraded:
          'packets counted by local port alone (no bpf_cast_to_kern_ctx before 6.2): one port in several network namespaces shares one count, and --filter netns= cannot narrow it',
      },
    ],
  },
  kernelNotes() {
    const notes: string[] = [];
    if (!tracepointHasField('skb', 'kfree_skb', 'reason'))
      notes.push(
        'drop reasons: skb:kfree_skb has no reason before 5.17: every reason reads "unknown" (location and layer still tell where)',
      );
    if (!tracepointHasField('skb', 'kfree_skb', 'rx_sk'))
      notes.push(
        'received packets freed before a socket owns them are placed by their addresses (skb:kfree_skb has no rx_sk before 6.11)',
      );
    return notes;
  },
  optionalSlots: ['service packets'],
  countMaps: ['drops', 'pkts'],
  // idle keys leave the kernel maps (room for new flows); their counts stay in the report
  ageMaps(o: DropOptions) {
    const idleMs = dropKeyIdleMs();
    return [
      { map: 'drops', idleMs, maxKept: KEPT_PER_KERNEL_KEY * o.maxKeys, coarsen: coarsenDropKey },
      { map: 'pkts', idleMs, maxKept: KEPT_PER_KERNEL_KEY * PKTS_MAX_ENTRIES },
    ];
  },
  configure(obj: BpfObject, o: DropOptions) {
    applyFilter(obj, o.filter);
    obj.setMapMaxEntries('drops', o.maxKeys);
  },
};

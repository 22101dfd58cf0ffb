/**
 * packet-drop-probe: the skb:kfree_skb tracepoint counts every dropped
 * packet in the kernel, by (location, reason, flow), into the per-CPU map
 * `drops`; cgroup programs count each local port's packets into `pkts` for
 * the per-1,000-packets rates. Kernel side: bpf/drops.bpf.c. Report:
 * src/report/drops.ts.
 */
import type { BpfObject } from '../native.js';
import { STAT__COUNT } from '../records.js';
import type { ProbeDefinition } from '../pipeline/session.js';
import { applyFilter } from '../filter/kernel.js';
import type { ResolvedFilter } from '../filter/resolve.js';
import { tracepointHasField } from '../kernel/features.js';

export interface DropOptions {
  filter: ResolvedFilter;
  /** distinct (location, reason, flow) keys the kernel counts; past that, drops count in the total only */
  maxKeys: number;
}

export const dropProbe: ProbeDefinition<DropOptions> = {
  name: 'packet-drop-probe',
  object: 'drops',
  statCount: STAT__COUNT,
  hooks: {
    'packet drops': [
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
  configure(obj: BpfObject, o: DropOptions) {
    applyFilter(obj, o.filter);
    obj.setMapMaxEntries('drops', o.maxKeys);
  },
};

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
      { name: 'cgroup_skb:ingress+egress', kind: 'cgroup_skb', target: 'cgroup2', programs: ['drops_pkt_in', 'drops_pkt_out'] },
    ],
  },
  optionalSlots: ['service packets'],
  countMaps: ['drops', 'pkts'],
  configure(obj: BpfObject, o: DropOptions) {
    applyFilter(obj, o.filter);
    obj.setMapMaxEntries('drops', o.maxKeys);
  },
};

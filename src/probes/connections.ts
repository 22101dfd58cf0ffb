/**
 * connection-tracker: the latency probe's programs (they count the exchanges
 * of each connection, which reuse needs) with the connection figures turned
 * on (bpf/latency.bpf.c measure_connections): TCP set-up time on both sides,
 * failed connects by cause, connection lifetimes, requests per connection
 * and idle gaps, as MP_REC_MEASURE records.
 * Report: src/report/connections.ts.
 */
import type { BpfObject } from '../native.js';
import type { ProbeDefinition } from '../pipeline/session.js';
import { latencyProbe, TLS_MAPS, TLS_MAPS_ENTRIES, type LatencyOptions } from './latency.js';
import { LIBSSL_PROBES } from '../kernel/libssl.js';

export type ConnectionOptions = LatencyOptions;

export const connectionProbe: ProbeDefinition<ConnectionOptions> = {
  ...latencyProbe,
  name: 'connection-tracker',
  hooks: {
    ...latencyProbe.hooks,
    // TLS handshakes from the TLS records of every local socket (bpf/tls.bpf.c), whatever the library
    'tls records': [
      {
        name: 'cgroup_skb:ingress+egress',
        kind: 'cgroup_skb',
        target: 'cgroup2',
        programs: ['tls_skb_ingress', 'tls_skb_egress'],
      },
    ],
    // and, where OpenSSL's libssl is there, its handshake calls
    'libssl handshakes': [
      {
        name: 'uprobe:libssl',
        kind: 'uprobe',
        target: 'libssl',
        programs: [...new Set(LIBSSL_PROBES.map((p) => p.program))],
      },
    ],
  },
  optionalSlots: ['tls records', 'libssl handshakes'],
  configure(obj: BpfObject, o: ConnectionOptions, programs: ReadonlySet<string>) {
    latencyProbe.configure(obj, o, programs);
    for (const m of TLS_MAPS) obj.setMapMaxEntries(m, TLS_MAPS_ENTRIES);
    obj.setGlobal('measure_connections', true);
  },
};

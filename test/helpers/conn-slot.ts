/**
 * A connection table row made by hand (the shape src/wasm.ts readConnSlot gives), for the tests of
 * what reads rows: the overhead analysis, service names, pod identity. Ends are "addr:port".
 */
import { ROLE_CLIENT, ROLE_SERVER } from '../../src/records.js';
import type { ConnSlot } from '../../src/wasm.js';

export interface HandRow {
  role: 'c' | 's';
  comm: string;
  tgid: number;
  netns: number;
  local: string;
  remote: string;
  /** requests (the histogram's count) */
  count: number;
  /** their mean, ms */
  meanMs: number;
  cgroup_id?: bigint;
}

let next = 1;

export function connSlot(r: HandRow): ConnSlot {
  const split = (e: string) => {
    const i = e.lastIndexOf(':');
    return [e.slice(0, i), Number(e.slice(i + 1))] as const;
  };
  const [laddr, lport] = split(r.local);
  const [raddr, rport] = split(r.remote);
  const id = next++;
  return {
    slot: id,
    conn_id: BigInt(id),
    role: r.role === 'c' ? ROLE_CLIENT : ROLE_SERVER,
    family: laddr.includes(':') ? 10 : 2,
    flags: 0,
    tgid: r.tgid,
    pid: r.tgid,
    netns: r.netns,
    lport,
    rport,
    laddr,
    raddr,
    comm: r.comm,
    cgroup_id: r.cgroup_id ?? 1n,
    start_ns: 0,
    end_ns: 0,
    closed: false,
    opened: true,
    requests: r.count,
    requests_kernel: 0,
    bytes_sent: 0,
    bytes_received: 0,
    srtt_us: 0,
    min_rtt_us: 0,
    // count and sum (what the overhead pairing reads: means), no buckets: a row's compact histogram
    // (src/wasm.ts readRowHistogramAt) has the same shape, its buckets are not read here
    hist: { count: r.count, sum_ns: r.meanMs * 1e6 * r.count, min_ns: 1, max_ns: 1, buckets: [] },
  };
}

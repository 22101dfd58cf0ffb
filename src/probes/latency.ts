/**
 * latency-probe: the probe's BPF object, its hooks and settings.
 * Kernel side: bpf/latency.bpf.c. Report: src/report/latency.ts.
 */
import type { BpfObject } from '../native.js';
import { LKEY_NETNS, LKEY_PORT, LKEY_SIZE, STAT__COUNT, STAT_NAMES } from '../records.js';
import { listeners, type Listener } from '../kernel/listeners.js';
import { log } from '../log.js';
import type { ProbeDefinition } from '../pipeline/session.js';
import { applyFilter, loadFilterCgroups } from '../filter/kernel.js';
import type { ResolvedFilter } from '../filter/resolve.js';

export interface LatencyOptions {
  /** --filter, resolved (src/filter/) */
  filter: ResolvedFilter;
  /** sockets the kernel side tracks at once (rounded up to a power of two; 4-way sets, LRU within a set) */
  socketTableSize: number;
  /** adopt connections that existed before the probe started */
  inferRoles: boolean;
}

/** bpf/tls.bpf.c's maps and the size connection-tracker gives them (the object's own). */
export const TLS_MAPS = ['tls_flows', 'tls_ssl', 'tls_ssl_call'] as const;
export const TLS_MAPS_ENTRIES = 16384;
const TLS_MAPS_UNUSED = 64;
/** the listening-port map: at least this many entries, at most LISTENERS_MAX */
const LISTENERS_MIN = 4096;
const LISTENERS_MAX = 1 << 20;
/** programs of the kprobe path, which pass the socket from kprobe to kretprobe through io_args */
const KPROBE_PROGRAMS = new Set(['latency_send_kp', 'latency_send_kr', 'latency_recv_kp', 'latency_recv_kr']);
/** io_args entries on the kprobe path: threads inside tcp_sendmsg/tcp_recvmsg at once (4096 kretprobe slots each) */
const IO_ARGS_KPROBE = 16384;
/** the listeners read in configure(), put into the map by afterLoad() */
const listenersAtStart = new WeakMap<BpfObject, Listener[]>();

/** The smallest power of two >= n (n >= 1). */
function pow2AtLeast(n: number): number {
  return 2 ** Math.ceil(Math.log2(n));
}

/** The kernel socket table's default: four ways per connection row (--max-connections), at least 4096. */
export function defaultSocketTableSize(maxConnections: number): number {
  return pow2AtLeast(Math.max(4096, 4 * maxConnections));
}

export const latencyProbe: ProbeDefinition<LatencyOptions> = {
  name: 'latency-probe',
  object: 'latency',
  statCount: STAT__COUNT,
  flushProgram: 'latency_flush',
  // Preference: the socket tracepoints (a stable interface, every TCP read and
  // write path, kernel >= 6.3), then fexit (BTF trampolines), then kprobes.
  hooks: {
    // reads and writes returning to the application
    'socket send': [
      {
        name: 'raw_tracepoint:sock_send_length',
        kind: 'raw_tracepoint',
        target: 'sock/sock_send_length',
        programs: ['latency_send'],
      },
      { name: 'fexit:tcp_sendmsg', kind: 'fentry', target: 'tcp_sendmsg', programs: ['latency_send_fx'] },
      // 5.10-5.16: no bpf_get_func_ret; the return value read at its place in the prototype
      {
        name: 'fexit:tcp_sendmsg (by prototype)',
        kind: 'fentry',
        target: 'tcp_sendmsg',
        programs: ['latency_send_fa'],
      },
      {
        name: 'kprobe:tcp_sendmsg',
        kind: 'kprobe',
        target: 'tcp_sendmsg',
        programs: ['latency_send_kp', 'latency_send_kr'],
      },
    ],
    'socket receive': [
      {
        name: 'raw_tracepoint:sock_recv_length',
        kind: 'raw_tracepoint',
        target: 'sock/sock_recv_length',
        programs: ['latency_recv'],
      },
      { name: 'fexit:tcp_recvmsg', kind: 'fentry', target: 'tcp_recvmsg', programs: ['latency_recv_fx'] },
      {
        name: 'fexit:tcp_recvmsg (by prototype)',
        kind: 'fentry',
        target: 'tcp_recvmsg',
        programs: ['latency_recv_fa'],
      },
      {
        name: 'kprobe:tcp_recvmsg',
        kind: 'kprobe',
        target: 'tcp_recvmsg',
        programs: ['latency_recv_kp', 'latency_recv_kr'],
      },
    ],
    // connection start (role) and end (cleanup)
    'tcp state': [
      {
        name: 'tracepoint:sock/inet_sock_set_state',
        kind: 'tracepoint',
        target: 'sock/inet_sock_set_state',
        programs: ['latency_state'],
      },
    ],
  },
  configure(obj: BpfObject, o: LatencyOptions, programs: ReadonlySet<string>) {
    applyFilter(obj, o.filter);
    obj.setGlobal('infer_roles', o.inferRoles);
    // a set-associative table of 4-way sets: a power of two, at least one set
    const entries = pow2AtLeast(Math.max(4, o.socketTableSize));
    obj.setGlobal('sock_table_size', BigInt(entries));
    obj.setMapMaxEntries('socks', entries);
    // listening ports (for the role of connections adopted mid-life): twice those at start, at least LISTENERS_MIN
    const known = o.inferRoles ? listeners() : [];
    listenersAtStart.set(obj, known);
    obj.setMapMaxEntries('listeners', Math.min(LISTENERS_MAX, pow2AtLeast(Math.max(LISTENERS_MIN, 2 * known.length))));
    // a socket per thread between a kprobe and its kretprobe: only the kprobe path has any
    const kprobes = [...programs].some((p) => KPROBE_PROGRAMS.has(p));
    obj.setMapMaxEntries('io_args', kprobes ? IO_ARGS_KPROBE : 1);
    // the TLS maps (bpf/tls.bpf.c, linked into this object) serve connection-tracker only: here
    // they are created nearly empty (5.6 MB of locked kernel memory less); connection-tracker sizes them
    for (const m of TLS_MAPS) obj.setMapMaxEntries(m, TLS_MAPS_UNUSED);
  },
  afterLoad(obj: BpfObject, o: LatencyOptions) {
    loadFilterCgroups(obj, o.filter);
    if (!o.inferRoles) return;
    // connections that predate the probe: a server if their local port listens (struct listen_key)
    const key = new Uint8Array(LKEY_SIZE);
    const dv = new DataView(key.buffer);
    const one = new Uint8Array([1]);
    const all = listenersAtStart.get(obj) ?? listeners();
    listenersAtStart.delete(obj);
    for (const l of all) {
      dv.setUint32(LKEY_NETNS, l.netns, true);
      dv.setUint16(LKEY_PORT, l.port, true);
      obj.mapUpdate('listeners', key, one);
    }
    log.debug(`${all.length} listening sockets known`);
  },
};

/** Names of the kernel counters, by index: MP_STATS in bpf/records.h (generated into src/generated/layout.ts). */
export const LATENCY_STATS = STAT_NAMES;

/**
 * packet-drop-probe's figures and report: every packet the kernel dropped
 * (skb:kfree_skb), by reason, layer, kernel function and service, with drop
 * rates per service; counted in the kernel (bpf/drops.bpf.c: the `drops` and
 * `pkts` per-CPU maps), read here each interval.
 *
 * - reason: the tracepoint's, named from the running kernel's BTF (enum
 *   skb_drop_reason, "SKB_DROP_REASON_" left off), never from a table here;
 *   "unknown" where the tracepoint has no reason field.
 * - function: the tracepoint's location, symbolized through /proc/kallsyms.
 * - layer: layerOf() below, from the reason, else from the function's name.
 * - service: the local port's --services entry, else the process that
 *   listens on (TCP) or is bound to (UDP) that port, "comm:port", else
 *   "port/proto".
 */
import os from 'node:os';
import { btfEnum } from '../kernel/btf-enum.js';
import { Kallsyms } from '../kernel/kallsyms.js';
import { tracepointHasField, VMLINUX_BTF } from '../kernel/features.js';
import { log } from '../log.js';
import { portOwners } from '../kernel/owners.js';
import { listenCounters, listenDelta, type ListenCounters } from '../kernel/netstat.js';
import { endpoint, formatAddr } from '../wasm.js';
import { LATENCY_STATS } from '../probes/latency.js';
import type { ServiceDef } from '../filter/services.js';
import { matchService } from '../filter/services.js';
import { k8sField, podService, type PodNames, type PodRef } from '../k8s/names.js';
import { defaultResolveEnv, netnsInode } from '../filter/resolve.js';
import type { MapReader, SessionResult } from '../pipeline/session.js';
import type { MetricSet, ProbeOutputs, SamplingInfo, ScalarSeries } from '../export/model.js';
import * as R from '../records.js';
import { programFigures, REPORT_VERSION } from './latency.js';
import { coarsenDropKey } from '../probes/drops.js';

export const LAYERS = ['xdp', 'tc', 'netfilter', 'ip', 'tcp', 'udp', 'socket', 'qdisc', 'device', 'other'] as const;
export type Layer = (typeof LAYERS)[number];

/**
 * The layer a drop belongs to: its reason when the reason says, else the
 * function's name, else "other". By reason: NETFILTER_DROP netfilter; TC_x
 * tc; XDP xdp; QDISC_x, FQ_x, CAKE_x qdisc; SOCKET_x, PROTO_MEM socket; TCP_x
 * tcp; UDP_x udp; NO_SOCKET the packet's protocol; IP_x, IPV6_x, OTHERHOST,
 * fragments, ICMP_x ip; NEIGH_x, DEV_x, FULL_RING, CPU_BACKLOG, MAC_x, VXLAN_x,
 * tunnels device. By function: tcp, udp, nf_ nft_ ipt_ (netfilter), sch_ and
 * qdisc (qdisc), tcf_ tc_ (tc), xdp, ip_ ip6_ icmp (ip), sk_ sock_ (socket),
 * netif_ dev_ napi (device).
 */
export function layerOf(reason: string, fn: string, protocol: number): Layer {
  const r = reason;
  if (r === 'NETFILTER_DROP') return 'netfilter';
  if (/^TC_/.test(r)) return 'tc';
  if (r === 'XDP') return 'xdp';
  if (/^(QDISC_|FQ_|CAKE_|DUALPI2_)/.test(r)) return 'qdisc';
  if (/^(SOCKET_|PROTO_MEM|UNIX_|PACKET_SOCK)/.test(r)) return 'socket';
  if (/^TCP_/.test(r)) return 'tcp';
  if (/^UDP_/.test(r)) return 'udp';
  if (r === 'NO_SOCKET') return protocol === 6 ? 'tcp' : protocol === 17 ? 'udp' : 'socket';
  if (/^(IP_|IPV6|OTHERHOST|PKT_TOO_|DUP_FRAG|FRAG_|ICMP_|XFRM_|INVALID_PROTO|UNICAST_IN_L2)/.test(r)) return 'ip';
  if (
    /^(NEIGH_|DEV_|FULL_RING|CPU_BACKLOG|MAC_|LOCAL_MAC|VXLAN_|TUNNEL_|IP_TUNNEL|NO_TX_TARGET|BRIDGE_|UNHANDLED_PROTO|SKB_|TAP_|HDR_TRUNC)/.test(
      r,
    )
  )
    return 'device';
  const f = fn.replace(/^_+/, '');
  if (/^tcp/.test(f)) return 'tcp';
  if (/^udp/.test(f)) return 'udp';
  if (/^(nf_|nft_|ipt_|ip6t_|xt_|nfnl)/.test(f)) return 'netfilter';
  if (/^(sch_|qdisc|pfifo|fq_|htb_|tbf_)/.test(f)) return 'qdisc';
  if (/^(tcf_|tc_)/.test(f)) return 'tc';
  if (/xdp/.test(f)) return 'xdp';
  if (/^(ip_|ip6_|ipv6_|icmp|raw_|inet_)/.test(f)) return 'ip';
  if (/^(sk_|sock_|skb_queue)/.test(f)) return 'socket';
  if (/^(netif_|dev_|napi|net_rx|veth|loopback|neigh_|arp_)/.test(f)) return 'device';
  return 'other';
}

/** One kernel map entry: drops of one (location, reason, flow). */
export interface DropEntry {
  key: string;
  location: bigint;
  reason: number;
  netns: number;
  lport: number;
  rport: number;
  protocol: number;
  family: number;
  dir: number;
  laddr: string;
  raddr: string;
  packets: number;
  bytes: number;
}

export interface PacketCount {
  key: string;
  netns: number;
  lport: number;
  protocol: number;
  packets: number;
  bytes: number;
}

export interface DropFigures {
  drops: DropEntry[];
  pkts: PacketCount[];
  kernel: Record<DropStat, number>;
  /** drop keys moved out of the kernel map when idle, and those folded into coarser keys (src/pipeline/map-aging.ts) */
  keys: { expired: number; coarsened: number };
}

function decodeDrop(k: Uint8Array, v: BigUint64Array): DropEntry {
  const dv = new DataView(k.buffer, k.byteOffset, k.byteLength);
  const family = dv.getUint8(R.DKEY_FAMILY);
  return {
    key: Buffer.from(k).toString('hex'),
    location: dv.getBigUint64(R.DKEY_LOCATION, true),
    reason: dv.getUint32(R.DKEY_REASON, true),
    netns: dv.getUint32(R.DKEY_NETNS, true),
    lport: dv.getUint16(R.DKEY_LPORT, true),
    rport: dv.getUint16(R.DKEY_RPORT, true),
    protocol: dv.getUint8(R.DKEY_PROTOCOL),
    family,
    dir: dv.getUint8(R.DKEY_DIR),
    laddr: formatAddr(k.slice(R.DKEY_LADDR, R.DKEY_LADDR + 16), family),
    raddr: formatAddr(k.slice(R.DKEY_RADDR, R.DKEY_RADDR + 16), family),
    packets: Number(v[0]),
    bytes: Number(v[1]),
  };
}

/** The local side of a drop key (what names its service), without decoding the rest. */
function localSide(k: Uint8Array): { netns: number; lport: number; protocol: number } {
  const dv = new DataView(k.buffer, k.byteOffset, k.byteLength);
  return {
    netns: dv.getUint32(R.DKEY_NETNS, true),
    lport: dv.getUint16(R.DKEY_LPORT, true),
    protocol: k[R.DKEY_PROTOCOL],
  };
}

function decodePkt(k: Uint8Array, v: BigUint64Array): PacketCount {
  const dv = new DataView(k.buffer, k.byteOffset, k.byteLength);
  return {
    key: Buffer.from(k).toString('hex'),
    netns: dv.getUint32(R.PKEY_NETNS, true),
    lport: dv.getUint16(R.PKEY_LPORT, true),
    protocol: dv.getUint8(R.PKEY_PROTOCOL),
    packets: Number(v[0]),
    bytes: Number(v[1]),
  };
}

export const DROP_STATS = ['drop_seen', 'drop_filtered', 'drop_table_full', 'drop_no_header'] as const;
export type DropStat = (typeof DROP_STATS)[number];

/** The maps first, then the counters: a drop counted in between shows in the total, never only in the breakdown. */
export function readDropFigures(maps: MapReader): DropFigures {
  const drops = maps.percpuHash('drops').map(([k, v]) => decodeDrop(k, v));
  const pkts = maps.percpuHash('pkts').map(([k, v]) => decodePkt(k, v));
  const kernelStats = maps.stats();
  const kernel = Object.fromEntries(
    DROP_STATS.map((n) => [n, Number(kernelStats[LATENCY_STATS.indexOf(n as never)] ?? 0n)]),
  ) as Record<DropStat, number>;
  const aging = maps.aging?.('drops');
  return { drops, pkts, kernel, keys: { expired: aging?.expired ?? 0, coarsened: aging?.coarsened ?? 0 } };
}

/** The hex key of the coarser key a drop key's counts fold into (the same when it is as coarse as it gets). */
const coarserHex = (key: string) => Buffer.from(coarsenDropKey(Buffer.from(key, 'hex'))).toString('hex');

/**
 * Each key's increase since `prev`. A key whose counts moved into its
 * coarser key (the expired keys' store was full: map-aging.ts) reads less
 * than before, or is gone: what it no longer holds is taken off the coarser
 * key's increase, so that the interval counts only new drops (the totals by
 * reason, function and service stay exact; the flow is the coarser one).
 */
function diffDrops(cur: DropEntry[], prev: DropEntry[]): DropEntry[] {
  const before = new Map(prev.map((d) => [d.key, d]));
  const out = new Map(
    cur.map((d) => {
      const p = before.get(d.key);
      return [d.key, { ...d, packets: d.packets - (p?.packets ?? 0), bytes: d.bytes - (p?.bytes ?? 0) }];
    }),
  );
  for (const p of prev) {
    const now = out.get(p.key); // its increase: negative when counts moved out
    const moved = now ? { packets: -now.packets, bytes: -now.bytes } : { packets: p.packets, bytes: p.bytes };
    if (moved.packets <= 0) continue;
    if (now) Object.assign(now, { packets: 0, bytes: 0 });
    const coarser = out.get(coarserHex(p.key));
    if (coarser && coarser !== now) {
      coarser.packets -= moved.packets;
      coarser.bytes -= moved.bytes;
    }
  }
  return [...out.values()].filter((d) => d.packets > 0);
}

export function diffDropFigures(cur: DropFigures, prev: DropFigures | undefined): DropFigures {
  if (!prev) return cur;
  const pp = new Map(prev.pkts.map((p) => [p.key, p]));
  return {
    drops: diffDrops(cur.drops, prev.drops),
    pkts: cur.pkts
      .map((p) => ({
        ...p,
        packets: p.packets - (pp.get(p.key)?.packets ?? 0),
        bytes: p.bytes - (pp.get(p.key)?.bytes ?? 0),
      }))
      .filter((p) => p.packets > 0),
    kernel: Object.fromEntries(DROP_STATS.map((n) => [n, cur.kernel[n] - prev.kernel[n]])) as Record<DropStat, number>,
    keys: { expired: cur.keys.expired - prev.keys.expired, coarsened: cur.keys.coarsened - prev.keys.coarsened },
  };
}

/** Names: reasons from BTF, functions from kallsyms, services from --services or the ports' owners. */
export class DropNamer {
  private reasons: Map<number, string>;
  private syms = new Kallsyms();
  private symsLoadedAt = Date.now();
  private owners = new Map<string, string>(); // "netns|port|proto" -> comm
  private ownerPods = new Map<string, PodRef>(); // "netns|port|proto" -> the owner's pod
  private servicePods = new Map<string, PodRef>(); // service name -> its pod
  readonly kallsymsRestricted: boolean;
  /** the kernel's listen-queue counters when the probe started */
  readonly listenAtStart: ListenCounters[] = listenCounters();

  constructor(
    private readonly defs: readonly ServiceDef[] = [],
    /** the run's pod names: a port owned by a pod's process is its service "namespace/pod:port" */
    readonly pods?: PodNames,
  ) {
    let names: Map<number, string>;
    try {
      names = btfEnum('skb_drop_reason', VMLINUX_BTF);
    } catch (e) {
      // a kernel without the enum (or its BTF unreadable): every reason reads "unknown", and says why once;
      // before 5.17 the tracepoint has no reason at all, which the probe's kernel notes say already
      if (tracepointHasField('skb', 'kfree_skb', 'reason'))
        log.warn(`drop reasons will read "unknown": ${(e as Error).message}`);
      else log.debug(`no drop reasons: ${(e as Error).message}`);
      names = new Map();
    }
    this.reasons = new Map([...names].map(([v, n]) => [v, n.replace(/^SKB_DROP_REASON_/, '')]));
    this.kallsymsRestricted = this.syms.restricted;
  }

  reason(v: number): string {
    return this.reasons.size === 0 ? 'unknown' : (this.reasons.get(v) ?? `reason_${v}`);
  }

  fn(addr: bigint): string {
    let s = this.syms.lookup(addr);
    // far past its nearest symbol: a module loaded after start (nft, sch_*): read kallsyms again, at most every 10 s
    if ((!s || s.offset > 1 << 20) && Date.now() - this.symsLoadedAt > 10_000) {
      this.syms = new Kallsyms();
      this.symsLoadedAt = Date.now();
      s = this.syms.lookup(addr);
    }
    return s && s.offset <= 1 << 20 ? s.name : `0x${addr.toString(16)}`;
  }

  private readonly env = defaultResolveEnv();
  private lastScan = 0;
  private readonly admitted = new Set<string>();

  /**
   * Looks up the owners of ports with drops not named yet: a /proc walk, at
   * most once a second; a port nobody held is asked again later (its owner
   * may start after), a port once named keeps its name.
   */
  learn(entries: readonly { netns: number; lport: number; protocol: number }[]): void {
    const key = (e: { netns: number; lport: number; protocol: number }) => `${e.netns}|${e.lport}|${e.protocol}`;
    const want = new Set(entries.filter((e) => e.lport && !this.owners.get(key(e))).map((e) => e.lport));
    if (want.size === 0 || Date.now() - this.lastScan < 1000) return;
    this.lastScan = Date.now();
    for (const o of portOwners(want)) {
      if (!o.comm) continue;
      const k = `${o.netns}|${o.port}|${o.protocol === 'tcp' ? 6 : 17}`;
      this.owners.set(k, o.comm);
      const ref = this.pods?.ofPid(o.pid);
      if (ref) this.ownerPods.set(k, ref);
    }
  }

  /** The pod of a service (named by service()), if it is one's. */
  podOf(service: string): PodRef | undefined {
    return this.servicePods.get(service);
  }

  /** The exporter labels of a service label: its pod's namespace, pod, container (none for "other" or a host's). */
  podLabels(serviceLabel: string): Record<string, string> {
    const ref = this.servicePods.get(serviceLabel);
    return ref && this.pods ? this.pods.labels(ref) : {};
  }

  service(e: { netns: number; lport: number; protocol: number }): string {
    if (!e.lport) return 'none';
    const comm = this.owners.get(`${e.netns}|${e.lport}|${e.protocol}`) || undefined;
    const named = this.defs.length
      ? matchService(this.defs, { port: e.lport, comm, netns: e.netns }, (n) => netnsInode(n, this.env))
      : undefined;
    const pod = this.ownerPods.get(`${e.netns}|${e.lport}|${e.protocol}`);
    if (pod) {
      const name = named ?? podService(pod, e.lport);
      this.servicePods.set(name, pod);
      return name;
    }
    if (named) return named;
    return comm
      ? `${comm}:${e.lport}`
      : `${e.lport}/${e.protocol === 6 ? 'tcp' : e.protocol === 17 ? 'udp' : e.protocol}`;
  }

  /**
   * The service label exporters use: the first `max - 1` services ever seen
   * keep theirs for the whole run, later ones are "other" (a label that came
   * and went between scrapes would look like a counter reset).
   */
  label(service: string, max: number): string {
    if (this.admitted.has(service)) return service;
    if (this.admitted.size < max - 1) {
      this.admitted.add(service);
      return service;
    }
    return 'other';
  }
}

/** Label values past `max` distinct ones go to "other" (and are counted). */
function bounded<T>(
  rows: [string, T][],
  max: number,
  merge: (a: T, b: T) => T,
  weight: (x: T) => number,
): { rows: [string, T][]; folded: number } {
  const sorted = [...rows].sort((a, b) => weight(b[1]) - weight(a[1]));
  if (sorted.length <= max) return { rows: sorted, folded: 0 };
  const keep = sorted.slice(0, Math.max(0, max - 1));
  const rest = sorted.slice(keep.length);
  return { rows: [...keep, ['other', rest.map((r) => r[1]).reduce(merge)]], folded: rest.length };
}

/** A key whose remote side was zeroed by coarsening (a real packet with an IP header has a remote address). */
function isCoarsePeer(e: DropEntry): boolean {
  return e.family !== 0 && e.rport === 0 && /^(0\.0\.0\.0|::)$/.test(e.raddr);
}

const PROTO: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6', 132: 'sctp' };

export function dropsSection(f: DropFigures, namer: DropNamer, durationS: number, maxLabels: number, sampleRate = 1) {
  namer.learn(f.drops);
  const d = durationS > 0 ? durationS : 1;
  const named = f.drops.map((e) => {
    const reason = namer.reason(e.reason);
    const fn = namer.fn(e.location);
    return { ...e, reasonName: reason, fn, layer: layerOf(reason, fn, e.protocol), service: namer.service(e) };
  });
  const counted = named.reduce((a, e) => a + e.packets, 0);
  // the kernel counts every drop inside the filter (the exact total); the breakdown holds 1 in
  // --sample-rate of them, scaled by that rate; what the full map could not hold is "unattributed"
  const total = f.kernel.drop_seen;
  const factor = sampleRate;
  if (factor !== 1) for (const e of named) e.packets *= factor;
  const unattributed = Math.max(0, total - counted * factor);
  const sum = (xs: typeof named) => xs.reduce((a, e) => a + e.packets, 0);
  const group = <K extends string>(key: (e: (typeof named)[number]) => K) => {
    const m = new Map<K, typeof named>();
    for (const e of named) m.set(key(e), [...(m.get(key(e)) ?? []), e]);
    return m;
  };
  const countBy = (xs: typeof named, key: (e: (typeof named)[number]) => string) => {
    const m: Record<string, number> = {};
    for (const e of xs) m[key(e)] = (m[key(e)] ?? 0) + e.packets;
    return Object.fromEntries(Object.entries(m).sort((a, b) => b[1] - a[1]));
  };
  // packets per service; those counted by port alone (netns 0: no bpf_cast_to_kern_ctx before 6.2)
  // go to every service with drops on that port and protocol, whatever its namespace
  const pktsBy = new Map<string, number>();
  const byPort = new Map<string, number>();
  for (const p of f.pkts) {
    if (p.netns === 0) {
      byPort.set(`${p.lport}|${p.protocol}`, (byPort.get(`${p.lport}|${p.protocol}`) ?? 0) + p.packets);
      continue;
    }
    const s = namer.service(p);
    pktsBy.set(s, (pktsBy.get(s) ?? 0) + p.packets);
  }
  if (byPort.size) {
    const ports = new Map<string, Set<string>>();
    for (const e of named) ports.set(e.service, (ports.get(e.service) ?? new Set()).add(`${e.lport}|${e.protocol}`));
    for (const [service, keys] of ports) {
      for (const k of keys) pktsBy.set(service, (pktsBy.get(service) ?? 0) + (byPort.get(k) ?? 0));
    }
  }
  const svc = bounded(
    [...group((e) => e.service)].map(([k, v]) => [k, v] as [string, typeof named]),
    maxLabels,
    (a, b) => [...a, ...b],
    sum,
  );
  const fns = bounded(
    [...group((e) => e.fn)].map(([k, v]) => [k, v] as [string, typeof named]),
    maxLabels,
    (a, b) => [...a, ...b],
    sum,
  );
  return {
    total,
    rate_per_s: Math.round((total / d) * 1000) / 1000,
    by_reason: countBy(named, (e) => e.reasonName),
    by_layer: countBy(named, (e) => e.layer),
    by_protocol: countBy(named, (e) => PROTO[e.protocol] ?? String(e.protocol)),
    by_service: svc.rows.map(([service, xs]) => {
      const drops = sum(xs);
      const packets = pktsBy.get(service);
      return {
        service,
        drops,
        rate_per_s: Math.round((drops / d) * 1000) / 1000,
        // drops per 1,000 packets of the service (packets its local sockets sent or received, plus these drops)
        per_1000_packets: Math.round((drops / (((packets ?? 0) + drops) / 1000)) * 1000) / 1000,
        packets: packets ?? 0,
        by_reason: countBy(xs, (e) => e.reasonName),
        by_layer: countBy(xs, (e) => e.layer),
        ...k8sField(namer.podOf(service)),
      };
    }),
    top_functions: fns.rows.slice(0, 20).map(([fn, xs]) => ({
      function: fn,
      drops: sum(xs),
      layer: xs[0].layer,
      by_reason: countBy(xs, (e) => e.reasonName),
    })),
    top_flows: [...named]
      .sort((a, b) => b.packets - a.packets)
      .slice(0, 20)
      .map((e) => ({
        protocol: PROTO[e.protocol] ?? String(e.protocol),
        local: endpoint(e.laddr, e.lport, e.family),
        // "*": many peers' drops folded together (keys_coarsened)
        remote: isCoarsePeer(e) ? '*' : endpoint(e.raddr, e.rport, e.family),
        direction: e.dir === 1 ? 'in' : e.dir === 2 ? 'out' : 'unknown',
        netns: e.netns,
        reason: e.reasonName,
        function: e.fn,
        layer: e.layer,
        service: e.service,
        drops: e.packets,
      })),
    labels_folded: { services: svc.folded, functions: fns.folded },
    breakdown: {
      counted,
      scale: factor,
      unattributed,
      table_full: f.kernel.drop_table_full,
      // drop keys moved out of the kernel map when idle (their counts kept), and those folded into coarser keys
      keys_expired: f.keys.expired,
      keys_coarsened: f.keys.coarsened,
    },
    kernel: f.kernel,
  };
}

export function buildDropReport(
  r: SessionResult,
  ctx: {
    filters: string[];
    namer: DropNamer;
    maxLabels: number;
    sampling: SamplingInfo;
    exports?: Record<string, unknown>;
  },
) {
  const f = readDropFigures(r.maps);
  const durationS = Number(r.endNs - r.startNs) / 1e9;
  return {
    timestamp: r.startedAt.toISOString(),
    duration_seconds: Math.round(durationS * 1000) / 1000,
    probe: 'packet-drop-probe' as const,
    report_version: REPORT_VERSION,
    host: os.hostname(),
    kernel: os.release(),
    drops: {
      ...dropsSection(f, ctx.namer, durationS, ctx.maxLabels, ctx.sampling.rate),
      // full accept queues: freed with consume_skb, never seen by kfree_skb; the kernel's own counters
      listen_queue_overflows: listenDelta(ctx.namer.listenAtStart, listenCounters()),
    },
    pipeline: {
      hooks: Object.fromEntries(r.hooks.map((h) => [h.slot, h.chosen?.name])),
      /** what this kernel made the probe measure less well or not at all (empty: nothing) */
      degraded: r.degraded,
      /** returns the kprobe path's kretprobes missed (null: no kretprobes used) */
      kretprobe_missed: r.kretprobeMissed,
      filters: ctx.filters,
      kallsyms_restricted: ctx.namer.kallsymsRestricted,
      programs: programFigures(r.programs),
    },
    ...(ctx.namer.pods ? { k8s: ctx.namer.pods.stats() } : {}),
    ...(ctx.exports ? { exports: ctx.exports } : {}),
  };
}
export type DropReport = ReturnType<typeof buildDropReport>;

export function dropOutputs(namer: DropNamer, maxLabels: number): ProbeOutputs<DropFigures> {
  return {
    read: (_state, _k, maps) => readDropFigures(maps),
    diff: diffDropFigures,
    interval: (f, span, sampling) => ({
      type: 'interval',
      probe: 'packet-drop-probe',
      report_version: REPORT_VERSION,
      host: os.hostname(),
      seq: span.seq,
      start: span.start.toISOString(),
      end: span.end.toISOString(),
      duration_seconds: (span.end.getTime() - span.start.getTime()) / 1000,
      drops: dropsSection(f, namer, (span.end.getTime() - span.start.getTime()) / 1000, maxLabels, sampling.rate),
      sampling,
    }),
    metricSet: (f, span, sampling): MetricSet => {
      const s = dropsSection(f, namer, (span.end.getTime() - span.start.getTime()) / 1000, maxLabels, sampling.rate);
      const counters: ScalarSeries[] = [];
      // meshprobe_drops_total{reason,layer,service}: label values bounded as in the JSON
      const agg = new Map<string, { reason: string; layer: string; service: string; n: number }>();
      namer.learn(f.drops);
      for (const e of f.drops) {
        const reason = namer.reason(e.reason);
        const layer = layerOf(reason, namer.fn(e.location), e.protocol);
        const service0 = namer.service(e);
        if (namer.pods?.expired(namer.podOf(service0))) continue; // a pod gone past its grace period
        const service = namer.label(service0, maxLabels);
        const k = `${reason}|${layer}|${service}`;
        const a = agg.get(k) ?? { reason, layer, service, n: 0 };
        a.n += e.packets * s.breakdown.scale; // a fixed factor: counters never go down
        agg.set(k, a);
      }
      for (const a of agg.values())
        counters.push({
          name: 'drops',
          help: 'Packets the kernel dropped (skb:kfree_skb), by reason, layer and service',
          labels: { reason: a.reason, layer: a.layer, service: a.service, ...namer.podLabels(a.service) },
          value: Math.round(a.n),
        });
      for (const x of s.by_service) {
        if (namer.pods?.expired(namer.podOf(x.service))) continue;
        counters.push({
          name: 'service_packets',
          help: 'Packets the local sockets of the service sent or received',
          labels: { service: x.service, ...namer.podLabels(x.service) },
          value: x.packets,
        });
      }

      counters.push({
        name: 'drops_unattributed',
        help: 'Drops in the total that the breakdown does not hold (the kernel map was full)',
        labels: {},
        value: s.breakdown.unattributed,
      });
      counters.push({
        name: 'drop_keys_expired',
        help: 'Drop keys moved out of the kernel map when idle (their counts kept in user space)',
        labels: {},
        value: s.breakdown.keys_expired,
      });
      counters.push({
        name: 'drop_keys_coarsened',
        help: 'Expired drop keys folded into coarser keys, remote address and port left out (the store was full)',
        labels: {},
        value: s.breakdown.keys_coarsened,
      });
      return {
        probe: 'packet-drop-probe',
        host: os.hostname(),
        start: span.start,
        end: span.end,
        cumulative: span.cumulative,
        histograms: [],
        counters,
        gauges: [
          {
            name: 'drop_labels_folded',
            help: 'Distinct services folded into "other" in this span',
            labels: { label: 'service' },
            value: s.labels_folded.services,
          },
        ],
      };
    },
    // while the probe runs: the owners of ports with drops, before they go away
    watch: (_state, _k, maps) => {
      namer.learn(maps.percpuHash('drops').map(([k]) => localSide(k)));
      namer.pods?.expire();
    },
    progress: (f) => ({
      requests: f.drops.reduce((a, e) => a + e.packets, 0),
      p50_ms: null,
      p99_ms: null,
      lost: f.kernel.drop_table_full,
    }),
    demand: () => ({ seen: 0, lost: 0 }),
  };
}

export function dropSummary(rep: DropReport): string {
  const top = Object.entries(rep.drops.by_reason)
    .slice(0, 3)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return `packet-drop-probe: ${rep.drops.total} drops in ${rep.duration_seconds} s (${rep.drops.rate_per_s}/s)${top ? `; ${top}` : ''}`;
}

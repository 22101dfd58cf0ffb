/**
 * latency-probe's figures and report: the client, server and network views,
 * each service and each connection, the event counters and every loss.
 *
 * readLatencyFigures() reads the shared memory into cumulative figures;
 * diffLatencyFigures() turns two of them into one interval's; the JSON
 * report (final or per interval), the stream, InfluxDB and Prometheus all
 * come from figures, so they agree by construction.
 */
import os from 'node:os';
import { readFileSync } from 'node:fs';
import { ROLE_CLIENT, ROLE_SERVER, CONN_F_ROLE_INFERRED } from '../records.js';
import {
  endpoint,
  readConnTable,
  allConnections,
  readCounters,
  readGlobalHistograms,
  readSvcTable,
  slotHistogram,
  type ConnSlot,
  type Counters,
  type ServiceSlot,
  type State,
} from '../wasm.js';
import { diff, emptyHistogram, mergeAll, percentile, toBucketList, type HistogramSnapshot } from '../histogram.js';
import { LATENCY_STATS } from '../probes/latency.js';
import type { SessionResult } from '../pipeline/session.js';
import type { ProgramStats } from '../native.js';
import { matchService, type ServiceDef } from '../filter/services.js';
import { cgroupPathOf, netnsInode, defaultResolveEnv } from '../filter/resolve.js';
import {
  scalar,
  type MetricSet,
  type HistogramSeries,
  type ProbeOutputs,
  type SamplingInfo,
  type ScalarSeries,
} from '../export/model.js';
import { ms, percentilesMs, viewSummary, type ViewSummary } from './views.js';
import { analyzeOverhead, plainAddr, DEFAULT_PROXY_COMMS, type ProxyFigure, type ServiceOverhead } from './overhead.js';
import { k8sField, podService, type K8sField, type PodNames, type PodRef, type PodStats } from '../k8s/names.js';

export const REPORT_VERSION = 2;

export type LatencyStat = (typeof LATENCY_STATS)[number];

const roleName = (r: number) => (r === ROLE_CLIENT ? 'client' : r === ROLE_SERVER ? 'server' : 'unknown');

function procComm(tgid: number): string | undefined {
  try {
    return readFileSync(`/proc/${tgid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** One service slot of the decoder (role, port, peer), named. */
export interface ServiceFigure {
  key: string;
  name: string;
  role: 'client' | 'server' | 'unknown';
  port: number;
  peer?: string;
  requests: number;
  hist: HistogramSnapshot;
  /** the pod of the service (a server's own; a client's: its server's, when that is on this node) */
  k8s?: PodRef;
}

export interface LatencyFigures {
  client: HistogramSnapshot;
  server: HistogramSnapshot;
  /** the kernel's windowed minimum RTT (the path) */
  network: HistogramSnapshot;
  /** the kernel's smoothed RTT (with delayed-ACK waits); absent = none */
  srtt?: HistogramSnapshot;
  services: ServiceFigure[];
  kernel: Record<LatencyStat, number>;
  counters: Counters;
  /** distinct pods labelled pod="other" so far (beyond --max-pods); undefined without pod names */
  podsOverLimit?: number;
}

/** A service's name and, on Kubernetes, its pod. */
export interface ServiceId {
  name: string;
  k8s?: PodRef;
}

/** What serviceIdentifier needs of a service slot. */
export type ServiceKey = Pick<ServiceSlot, 'role' | 'port' | 'raddr' | 'family' | 'tgid'> & { netns?: number };

/**
 * What a service is (see src/filter/services.ts): a --services entry when one
 * matches; else a server is "comm:port" of the process owning the listening
 * port, and a client's service is the peer it talks to, named after that
 * server when the probe sees its side too, else "addr:port".
 */
export function serviceNamer(conns: readonly ConnSlot[], defs: readonly ServiceDef[] = []): (s: ServiceSlot) => string {
  const id = serviceIdentifier(conns, defs);
  return (s) => id(s).name;
}

/**
 * serviceNamer with pods: a server in a pod is "namespace/pod:port" (its cgroup, recorded by the kernel
 * when the connection opened, names the pod: src/k8s/names.ts), and so is a client's service when that
 * server is on this node; a --services entry still wins. Host processes keep "comm:port".
 */
/** Where a server listens, as its clients see it: loopback addresses are per network namespace (when it is known). */
function atKey(addr: string, port: number, netns?: number): string {
  const a = plainAddr(addr);
  return netns && (a.startsWith('127.') || a === '::1') ? `${netns}|${a}|${port}` : `${a}|${port}`;
}

export function serviceIdentifier(
  conns: readonly ConnSlot[],
  defs: readonly ServiceDef[] = [],
  pods?: PodNames,
): (s: ServiceKey) => ServiceId {
  // a server connection per "lport|netns" (pods on one node listen on the same ports) and per lport
  const servers = new Map<string, ConnSlot>();
  const serverAt = new Map<string, ConnSlot>(); // "laddr|lport" (loopback: "netns|laddr|lport") -> that connection
  const put = (m: Map<string, ConnSlot>, k: string, c: ConnSlot) => {
    const known = m.get(k);
    if (!known || (!known.comm && c.comm)) m.set(k, c);
  };
  for (const c of conns) {
    if (c.role !== ROLE_SERVER) continue;
    put(servers, `${c.lport}|${c.netns}`, c);
    put(servers, `${c.lport}`, c);
    serverAt.set(atKey(c.laddr, c.lport, c.netns), c);
    if (!serverAt.has(atKey(c.laddr, c.lport))) serverAt.set(atKey(c.laddr, c.lport), c);
  }
  const env = defaultResolveEnv();
  const netns = (n: string) => netnsInode(n, env);
  const byDefs = (port: number, side: ConnSlot | undefined) =>
    defs.length
      ? matchService(
          defs,
          {
            port,
            comm: side?.comm || undefined,
            cgroupPath: side ? cgroupPathOf(side.cgroup_id) : undefined,
            netns: side?.netns,
          },
          netns,
        )
      : undefined;
  const podOf = (c: ConnSlot | undefined) => (c && pods ? pods.of(c.cgroup_id) : undefined);
  const withPod = (name: string, k8s: PodRef | undefined): ServiceId => (k8s ? { name, k8s } : { name });
  return (s) => {
    if (s.role === ROLE_SERVER) {
      // by port alone only when the slot has no namespace: with one, another pod's server on the same port is not it
      const side = s.netns ? servers.get(`${s.port}|${s.netns}`) : servers.get(`${s.port}`);
      const k8s = podOf(side);
      return withPod(
        byDefs(s.port, side) ??
          (k8s ? podService(k8s, s.port) : `${side?.comm || procComm(s.tgid) || `pid${s.tgid}`}:${s.port}`),
        k8s,
      );
    }
    const local = serverAt.get(atKey(s.raddr, s.port, s.netns));
    const k8s = podOf(local);
    return withPod(
      byDefs(s.port, local) ??
        (k8s && local
          ? podService(k8s, local.lport)
          : local?.comm
            ? `${local.comm}:${local.lport}`
            : endpoint(s.raddr, s.port, s.family)),
      k8s,
    );
  };
}

export function readLatencyFigures(
  state: State,
  kernelStats: bigint[],
  defs: readonly ServiceDef[] = [],
  conns?: ConnSlot[],
  pods?: PodNames,
): LatencyFigures {
  const g = readGlobalHistograms(state); // client, server, network (min RTT), srtt
  const counters = readCounters(state, { flush: false });
  const slots = readSvcTable(state, { flush: false, metric: 0 }); // the latency slots (connection-tracker's measures have their own)
  const identify = serviceIdentifier(
    allConnections(state, conns ?? readConnTable(state, { histograms: false })),
    defs,
    pods,
  );
  const services = slots.map((s): ServiceFigure => {
    const id = identify(s);
    // a pod's label place is taken when it is first read, so the overflow count below is current
    if (id.k8s && pods && !pods.expired(id.k8s)) pods.labels(id.k8s);
    return {
      key: s.key.toString(),
      name: id.name,
      role: roleName(s.role),
      port: s.port,
      ...(s.role === ROLE_CLIENT ? { peer: endpoint(s.raddr, s.port, s.family) } : {}),
      requests: s.requests,
      hist: slotHistogram(s),
      ...(id.k8s ? { k8s: id.k8s } : {}),
    };
  });
  return {
    ...g,
    services,
    ...(pods ? { podsOverLimit: pods.overLimit } : {}),
    kernel: Object.fromEntries(LATENCY_STATS.map((n, i) => [n, Number(kernelStats[i] ?? 0n)])) as Record<
      LatencyStat,
      number
    >,
    counters,
  };
}

/** The figures of the interval between two cumulative readings. */
export function diffLatencyFigures(cur: LatencyFigures, prev: LatencyFigures | undefined): LatencyFigures {
  if (!prev) return cur;
  const before = new Map(prev.services.map((s) => [s.key, s]));
  const sub = <K extends string>(a: Record<K, number>, b: Record<K, number>) =>
    Object.fromEntries(
      Object.entries(a).map(([k, v]) => [k, (v as number) - ((b as Record<string, number>)[k] ?? 0)]),
    ) as Record<K, number>;
  return {
    client: diff(cur.client, prev.client),
    server: diff(cur.server, prev.server),
    network: diff(cur.network, prev.network),
    srtt: diff(cur.srtt ?? emptyHistogram(), prev.srtt),
    services: cur.services
      .map((s) => ({
        ...s,
        requests: s.requests - (before.get(s.key)?.requests ?? 0),
        hist: diff(s.hist, before.get(s.key)?.hist),
      }))
      .filter((s) => s.requests > 0),
    kernel: sub(cur.kernel, prev.kernel),
    counters: sub(cur.counters, prev.counters),
    ...(cur.podsOverLimit !== undefined ? { podsOverLimit: cur.podsOverLimit - (prev.podsOverLimit ?? 0) } : {}),
  };
}

/** Exchanges the kernel saw finish, measured or not, per role (kernel counters: exact, whatever reached user space). */
export function exchangesSeen(f: LatencyFigures): { client: number; server: number } {
  const k = f.kernel;
  return { client: k.measured_client + k.unsampled_client, server: k.measured_server + k.unsampled_server };
}

/**
 * Every exchange the kernel saw (sampled or not) per exchange measured, per
 * role: the factor that scales measured counts into estimated ones (the
 * kernel counts the exchanges it did not measure, so view totals are exact
 * and per-service figures are scaled). Exact under changing rates too.
 */
export function samplingFactors(f: LatencyFigures): { client: number; server: number } {
  const seen = exchangesSeen(f);
  const k = f.kernel;
  return {
    client: k.measured_client > 0 ? seen.client / k.measured_client : 1,
    server: k.measured_server > 0 ? seen.server / k.measured_server : 1,
  };
}

/**
 * Services merged by name and role (several slots may carry one name; `keyOf` may merge more): the report's
 * row and the merged histogram.
 */
function servicesOut(
  services: readonly ServiceFigure[],
  factors: { client: number; server: number },
  keyOf: (s: ServiceFigure) => string = (s) => `${s.name}\u0000${s.role}`,
) {
  const groups = new Map<string, ServiceFigure[]>();
  for (const s of services) {
    const k = keyOf(s);
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  return [...groups.values()]
    .map((g) => {
      const hist = mergeAll(g.map((s) => s.hist));
      const requests = g.reduce((a, s) => a + s.requests, 0);
      const peers = [...new Set(g.map((s) => s.peer).filter((p): p is string => !!p))];
      const row = {
        service: g[0].name,
        role: g[0].role,
        port: g[0].port,
        ...(peers.length ? { peer: peers.length === 1 ? peers[0] : peers } : {}),
        requests,
        requests_estimated: Math.round(requests * (g[0].role === 'server' ? factors.server : factors.client)),
        percentiles: hist.count ? percentilesMs(hist) : null,
        mean_ms: hist.count ? ms(hist.sum_ns / hist.count) : null,
        min_ms: hist.count ? ms(hist.min_ns) : null,
        max_ms: hist.count ? ms(hist.max_ns) : null,
        latency_histogram: hist.count ? viewSummary(hist).latency_histogram : null,
        buckets: toBucketList(hist),
        ...k8sField(g[0].k8s),
      };
      return { row, hist, k8s: g[0].k8s };
    })
    .sort((a, b) => b.row.requests - a.row.requests);
}

export interface LatencyMetrics {
  view: 'client' | 'server' | 'none';
  total_requests: number;
  total_requests_estimated: number;
  latency_histogram: ViewSummary['latency_histogram'];
  percentiles: ViewSummary['percentiles'];
  client: ViewSummary;
  server: ViewSummary;
  /** the kernel's windowed minimum RTT (tcp_min_rtt) on measured exchanges: the path */
  network: ViewSummary;
  /** the kernel's smoothed RTT (srtt): includes the time ACKs wait for the answer */
  network_srtt: ViewSummary;
  services: unknown[];
  events: { send: number; receive: number; cleanup: number; lost: number };
  loss: Record<string, number>;
  sampling: SamplingInfo & {
    requests_measured: number;
    exchanges_seen: number;
    factor: { client: number; server: number };
  };
  overhead_analysis: Record<string, unknown>;
}

/** The "metrics" object of a report, for the whole run or one interval. */
export function latencyMetrics(f: LatencyFigures, sampling: SamplingInfo): LatencyMetrics {
  const client = viewSummary(f.client);
  const server = viewSummary(f.server);
  const network = viewSummary(f.network);
  const networkSrtt = viewSummary(f.srtt ?? emptyHistogram());
  const view = client.total_requests > 0 ? 'client' : server.total_requests > 0 ? 'server' : 'none';
  const top = view === 'server' ? server : client;
  const factors = samplingFactors(f);
  const seen = exchangesSeen(f);
  const k = f.kernel;
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  return {
    view,
    total_requests: top.total_requests,
    total_requests_estimated: view === 'server' ? seen.server : view === 'client' ? seen.client : 0,
    latency_histogram: top.latency_histogram,
    percentiles: top.percentiles,
    client,
    server,
    network,
    network_srtt: networkSrtt,
    services: servicesOut(f.services, factors).map((s) => s.row),
    // A full ring fails the kernel's output (counted per record in output_failures)
    // and perf also reports it as lost samples of up to 64 records: not the same unit, never added.
    events: { send: k.send, receive: k.receive, cleanup: k.cleanup, lost: k.output_failures },
    loss: {
      records_lost: k.output_failures,
      perf_lost_samples: f.counters.lost_records,
      perf_lost_notices: f.counters.lost_events,
      sockets_evicted: k.evicted,
      exchanges_discarded: k.discarded,
      connection_table_full: f.counters.conn_table_full,
      connections_not_tracked: f.counters.conn_refused,
      service_table_full: f.counters.svc_table_full,
      unknown_records: f.counters.unknown_records,
      unknown_role: f.counters.unknown_role,
    },
    sampling: {
      ...sampling,
      requests_measured: k.measured_client + k.measured_server,
      exchanges_seen: seen.client + seen.server,
      factor: { client: r3(factors.client), server: r3(factors.server) },
    },
    overhead_analysis: overheadAnalysis(client, server, network, networkSrtt),
  };
}

/** A BPF program's kernel run time (counted with kernel.bpf_stats_enabled), as every report lists it. */
export interface ProgramFigure {
  name: string;
  id: number;
  run_count: number;
  run_time_ns: number;
  ns_per_run: number | null;
}

export function programFigures(programs: readonly ProgramStats[]): ProgramFigure[] {
  return programs.map((p) => ({
    name: p.name,
    id: p.id,
    run_count: Number(p.runCount),
    run_time_ns: Number(p.runTimeNs),
    ns_per_run: p.runCount > 0n ? Math.round(Number(p.runTimeNs) / Number(p.runCount)) : null,
  }));
}

/** The "pipeline" object of latency-probe's (and connection-tracker's) report. */
export interface LatencyPipeline {
  /** slot -> the hook chosen (undefined: none) */
  hooks: Record<string, string | undefined>;
  /** what this kernel made the probe measure less well or not at all (empty: nothing) */
  degraded: string[];
  /** returns the kprobe path's kretprobes missed (null: no kretprobes used) */
  kretprobe_missed: number | null;
  filters: string[];
  workers: number;
  batches: number;
  bytes: number;
  records: number;
  sockets_tracked: number;
  sockets_filtered: number;
  records_emitted: number;
  programs: ProgramFigure[];
}

export interface LatencyReport {
  timestamp: string;
  duration_seconds: number;
  probe: 'latency-probe';
  report_version: number;
  host: string;
  kernel: string;
  metrics: LatencyMetrics & { connections: unknown[]; connections_aged: ConnectionsAged; services_aged: ServicesAged };
  pipeline: LatencyPipeline;
  /** pod names (src/k8s/names.ts): how many, the bound on labels, the kubelet's directories read */
  k8s?: PodStats;
  exports?: Record<string, unknown>;
}

export interface ReportContext {
  filters: string[];
  services: readonly ServiceDef[];
  /** process names of sidecar proxies (--proxy-comm) */
  proxyComms?: readonly string[];
  /** the run's pod names (one per run: its caches hold) */
  pods?: PodNames;
  sampling: SamplingInfo;
  exports?: Record<string, unknown>;
}

/** overhead_analysis with the pods named: each proxy's, each service's (src/report/overhead.ts knows none). */
function overheadWithPods(
  o: ReturnType<typeof analyzeOverhead>,
  conns: readonly ConnSlot[],
  identify: (c: ConnSlot) => ServiceId,
  pods: PodNames | undefined,
) {
  if (!pods) return o;
  const byPid = new Map<number, PodRef>();
  const byService = new Map<string, PodRef>();
  for (const c of conns) {
    const ref = pods.of(c.cgroup_id);
    if (!ref) continue;
    if (!byPid.has(c.tgid)) byPid.set(c.tgid, ref);
    if (c.role === ROLE_SERVER) {
      const id = identify(c);
      if (id.k8s && !byService.has(id.name)) byService.set(id.name, id.k8s);
    }
  }
  const proxies = o.proxies.map((p): ProxyFigure & { k8s?: K8sField } => ({ ...p, ...k8sField(byPid.get(p.pid)) }));
  const by_service = o.by_service.map((s): ServiceOverhead & { k8s?: K8sField } => ({
    ...s,
    ...k8sField(byService.get(s.service)),
  }));
  return { ...o, proxies, by_service };
}

export function buildLatencyReport(r: SessionResult, ctx: ReportContext): LatencyReport {
  const conns = readConnTable(r.state);
  const f = readLatencyFigures(r.state, r.kernelStats, ctx.services, conns, ctx.pods);
  const durationS = Number(r.endNs - r.startNs) / 1e9;

  const all = allConnections(r.state, conns); // with the folded rows of the connections aged out
  const { pods } = ctx;
  const namer = serviceIdentifier(all, ctx.services, pods);
  const identify = (c: ConnSlot) =>
    namer({ role: c.role, port: c.lport, raddr: c.raddr, family: c.family, tgid: c.tgid, netns: c.netns });
  const overhead = overheadWithPods(
    analyzeOverhead({
      conns: all,
      proxyComms: ctx.proxyComms ?? DEFAULT_PROXY_COMMS,
      commOf: (c) => c.comm || procComm(c.tgid) || '',
      serviceOf: (c) => identify(c).name,
      // a mesh sidecar by its container's name (istio-proxy, linkerd-proxy, cilium-envoy), whatever its process name
      ...(pods ? { isProxy: (c: ConnSlot) => pods.sidecar(c.cgroup_id) } : {}),
    }),
    all,
    identify,
    pods,
  );
  const metrics = latencyMetrics(f, ctx.sampling);
  const connections = conns
    .sort((a, b) => b.requests - a.requests || Number(a.conn_id - b.conn_id))
    .map((c) => ({
      conn_id: c.conn_id.toString(),
      role: roleName(c.role),
      role_inferred: (c.flags & CONN_F_ROLE_INFERRED) !== 0,
      local: endpoint(c.laddr, c.lport, c.family),
      remote: endpoint(c.raddr, c.rport, c.family),
      pid: c.tgid,
      comm: c.comm || procComm(c.tgid) || '',
      netns: c.netns,
      cgroup_id: c.cgroup_id.toString(),
      cgroup: cgroupPathOf(c.cgroup_id) ?? null,
      requests: c.requests,
      percentiles: c.hist && c.hist.count > 0 ? percentilesMs(c.hist) : null,
      mean_ms: c.hist && c.hist.count > 0 ? ms(c.hist.sum_ns / c.hist.count) : null,
      min_rtt_ms: (c.min_rtt_us ?? 0) / 1000,
      srtt_ms: c.srtt_us / 1000,
      bytes_sent: c.bytes_sent,
      bytes_received: c.bytes_received,
      closed: c.closed,
      ...k8sField(pods?.of(c.cgroup_id)),
    }));

  return {
    timestamp: r.startedAt.toISOString(),
    duration_seconds: Math.round(durationS * 1000) / 1000,
    probe: 'latency-probe',
    report_version: REPORT_VERSION,
    host: os.hostname(),
    kernel: os.release(),
    metrics: {
      ...metrics,
      overhead_analysis: {
        ...overhead,
        network_ms: metrics.overhead_analysis.network_ms ?? null,
        network_srtt_ms: metrics.overhead_analysis.network_srtt_ms ?? null,
      },
      connections,
      connections_aged: connectionsAged(r.state),
      services_aged: servicesAged(r.state),
    },
    pipeline: {
      hooks: Object.fromEntries(r.hooks.map((h) => [h.slot, h.chosen?.name])),
      /** what this kernel made the probe measure less well or not at all (empty: nothing) */
      degraded: r.degraded,
      /** returns the kprobe path's kretprobes missed (null: no kretprobes used) */
      kretprobe_missed: r.kretprobeMissed,
      filters: ctx.filters,
      workers: r.pool.workers,
      batches: r.pool.batches,
      bytes: r.pool.bytes,
      records: f.counters.records_total,
      sockets_tracked: f.kernel.tracked,
      sockets_filtered: f.kernel.filtered,
      records_emitted: f.kernel.emitted,
      programs: programFigures(r.programs),
    },
    ...(pods ? { k8s: pods.stats() } : {}),
    ...(ctx.exports ? { exports: ctx.exports } : {}),
  };
}

/** Connections whose rows were freed after they closed (src/pipeline/aging.ts): not in `connections`, in every other figure. */
export interface ConnectionsAged {
  connections: number;
  requests: number;
  /** of those, connections whose folded rows were dropped (the fold keeps a bounded number of process pairs) */
  folded_rows_dropped: number;
  /** the table's rows (--max-connections) */
  table_rows: number;
}

export function connectionsAged(state: State): ConnectionsAged {
  const a = state.aged;
  return {
    connections: a.connections,
    requests: a.requests,
    folded_rows_dropped: a.dropped,
    table_rows: state.layout.connCap,
  };
}

/** Idle services whose slots were freed (src/pipeline/aging.ts): still listed in `services`, with all their figures. */
export interface ServicesAged {
  /** slots freed */
  services: number;
  /** expired services forgotten (more were kept than the store holds): their requests are in the views only */
  forgotten: number;
  /** the table's slots (--max-services) */
  table_slots: number;
}

export function servicesAged(state: State): ServicesAged {
  return {
    services: state.aged.servicesExpired,
    forgotten: state.aged.servicesDropped,
    table_slots: state.layout.svcCap,
  };
}

/** One interval of the JSON stream: the report's fields for [start, end). */
export function latencyIntervalReport(
  f: LatencyFigures,
  span: { start: Date; end: Date; seq: number },
  sampling: SamplingInfo,
) {
  return {
    type: 'interval',
    probe: 'latency-probe',
    report_version: REPORT_VERSION,
    host: os.hostname(),
    seq: span.seq,
    start: span.start.toISOString(),
    end: span.end.toISOString(),
    duration_seconds: Math.round(span.end.getTime() - span.start.getTime()) / 1000,
    metrics: latencyMetrics(f, sampling),
  };
}

/** The figures as exporter series (InfluxDB, Prometheus): names and labels in src/export/model.ts terms. */
export function latencyMetricSet(
  f: LatencyFigures,
  span: { start: Date; end: Date; cumulative: boolean },
  sampling: SamplingInfo,
  pods?: PodNames,
): MetricSet {
  const factors = samplingFactors(f);
  const seen = exchangesSeen(f);
  const histograms: HistogramSeries[] = [
    ...(['client', 'server'] as const).map((view) => ({
      name: 'request_duration',
      help: 'Request to response time of TCP exchanges seen by the kernel, per view (client: first byte written to first byte of the response read; server: request read to response written)',
      labels: { view },
      hist: f[view],
    })),
    {
      name: 'network_rtt',
      help: "The network's round trip: the kernel's windowed minimum TCP RTT (tcp_min_rtt) of measured connections",
      labels: {},
      hist: f.network,
    },
    {
      name: 'network_srtt',
      help: "The kernel's smoothed TCP RTT (srtt) of measured connections: includes delayed-ACK waits, so server time",
      labels: {},
      hist: f.srtt ?? emptyHistogram(),
    },
    ...seriesServices(f.services, factors, pods).map(({ row, hist, labels }) => ({
      name: 'service_request_duration',
      help: 'Request to response time per service and role (client or server side)',
      labels: { service: row.service, role: row.role, ...labels },
      hist,
    })),
  ];
  const k = f.kernel;
  const c = scalar;
  const counters: ScalarSeries[] = [
    c('requests', 'Exchanges measured (sampled), per view', f.client.count, { view: 'client' }),
    c('requests', 'Exchanges measured (sampled), per view', f.server.count, { view: 'server' }),
    c('exchanges_seen', 'Exchanges the kernel saw finish, measured or not (sampling), per view', seen.client, {
      view: 'client',
    }),
    c('exchanges_seen', 'Exchanges the kernel saw finish, measured or not (sampling), per view', seen.server, {
      view: 'server',
    }),
    c('socket_events', 'Reads and writes seen on tracked sockets', k.send, { event: 'send' }),
    c('socket_events', 'Reads and writes seen on tracked sockets', k.receive, { event: 'receive' }),
    c('lost_records', 'Records the kernel could not write because the perf ring was full', k.output_failures),
    c('sockets_evicted', 'Sockets pushed out of the full in-kernel socket table', k.evicted),
    c('sockets_filtered', 'Sockets left out by --filter', k.filtered),
    c('exchanges_discarded', 'Exchanges dropped as inconsistent', k.discarded),
    c('table_full', 'Records that found the user-space table full', f.counters.conn_table_full, {
      table: 'connections',
    }),
    c('table_full', 'Records that found the user-space table full', f.counters.svc_table_full, { table: 'services' }),
    c(
      'connections_not_tracked',
      'Connections that found no free row in the connection table (--max-connections)',
      f.counters.conn_refused,
    ),
    ...(f.podsOverLimit !== undefined
      ? [
          c(
            'k8s_pods_over_label_limit',
            'Distinct pods labelled pod="other" because --max-pods pods had their own labels already',
            f.podsOverLimit,
          ),
        ]
      : []),
  ];
  const gauges: ScalarSeries[] = [
    c('sample_rate', '1 request in this many is measured', sampling.rate),
    c(
      'sampling_factor',
      'Exchanges seen per exchange measured, per view (scales measured counts into estimates)',
      Math.round(factors.client * 1000) / 1000,
      { view: 'client' },
    ),
    c(
      'sampling_factor',
      'Exchanges seen per exchange measured, per view (scales measured counts into estimates)',
      Math.round(factors.server * 1000) / 1000,
      { view: 'server' },
    ),
  ];
  return {
    probe: 'latency-probe',
    host: os.hostname(),
    start: span.start,
    end: span.end,
    cumulative: span.cumulative,
    histograms,
    counters,
    gauges,
  };
}

/**
 * The per-service series of some figures: a pod's services get the labels namespace, pod and container
 * (src/k8s/names.ts: bounded by --max-pods, beyond which pod="other" and the service's name says "other"
 * too), expired pods none at all (their series disappear); series that end up with equal labels merge.
 */
export function seriesServices(
  services: readonly ServiceFigure[],
  factors: { client: number; server: number },
  pods: PodNames | undefined,
) {
  if (!pods) return servicesOut(services, factors).map((s) => ({ ...s, labels: {} }));
  const live = services
    .filter((s) => !pods.expired(s.k8s))
    .map((s) => ({ ...s, name: pods.serviceLabel(s.name, s.k8s, s.port) }));
  const labelsOf = (s: ServiceFigure) => pods.labels(s.k8s);
  return servicesOut(live, factors, (s) => `${s.name}\u0000${s.role}\u0000${JSON.stringify(labelsOf(s))}`).map((s) => ({
    ...s,
    labels: pods.labels(s.k8s),
  }));
}

/**
 * Where the time goes, from means (means add up; percentiles do not): what
 * clients observe = the servers' processing + everything between them
 * (kernel, network and, with a mesh, sidecars). Exact when the client and
 * server views cover the same requests (both ends on this host, one filter).
 */
export function overheadAnalysis(
  client: ViewSummary,
  server: ViewSummary,
  network: ViewSummary,
  networkSrtt: ViewSummary,
): Record<string, unknown> {
  const both = client.total_requests > 0 && server.total_requests > 0;
  const round = (x: number) => Math.round(x * 1e4) / 1e4;
  return {
    total_ms: client.total_requests > 0 ? client.mean_ms : null,
    application_ms: server.total_requests > 0 ? server.mean_ms : null,
    kernel_processing_ms: both ? round(Math.max(0, client.mean_ms - server.mean_ms)) : null,
    mesh_processing_ms: null,
    network_ms: network.total_requests > 0 ? network.percentiles.p50 : null,
    network_srtt_ms: networkSrtt.total_requests > 0 ? networkSrtt.percentiles.p50 : null,
    method:
      'this interval, from the views alone (means): total = client view, application = server view, kernel = total - ' +
      'application (kernel, network and any proxy between them); the final report follows connections through sidecar proxies ' +
      'and splits out mesh_processing_ms',
  };
}

export function summaryLine(rep: LatencyReport): string {
  const m = rep.metrics;
  const v = (name: string, s: ViewSummary) =>
    s.total_requests > 0
      ? `${name} p50 ${s.percentiles.p50} ms p99 ${s.percentiles.p99} ms (${s.total_requests})`
      : `${name} none`;
  const sampled =
    m.sampling.rate > 1 || m.sampling.mode === 'auto'
      ? `; sampled 1 in ${m.sampling.rate}, ~${m.total_requests_estimated} estimated`
      : '';
  return (
    `latency-probe: ${m.total_requests} requests in ${rep.duration_seconds} s${sampled}; ${v('client', m.client)}; ` +
    `${v('server', m.server)}; ${m.connections.length} connections; lost ${m.events.lost}`
  );
}

/**
 * How the run loop reads, differences and shows latency figures (src/cli/run-probe.ts); with the run's pod
 * names, the pods gone past their grace period are dropped every second (watch).
 */
export function latencyOutputs(services: readonly ServiceDef[], pods?: PodNames): ProbeOutputs<LatencyFigures> {
  return {
    read: (state, kernelStats) => readLatencyFigures(state, kernelStats, services, undefined, pods),
    diff: diffLatencyFigures,
    interval: (f, span, sampling) => latencyIntervalReport(f, span, sampling),
    metricSet: (f, span, sampling) => latencyMetricSet(f, span, sampling, pods),
    progress: latencyProgress,
    demand: latencyDemand,
    ...(pods
      ? {
          watch: () => {
            pods.expire();
          },
        }
      : {}),
  };
}

/** The live line's figures: the client view, else the server view. */
export function latencyProgress(f: LatencyFigures) {
  const h = f.client.count > 0 ? f.client : f.server;
  return {
    requests: h.count,
    p50_ms: h.count ? ms(percentile(h, 0.5)) : null,
    p99_ms: h.count ? ms(percentile(h, 0.99)) : null,
    lost: f.kernel.output_failures,
  };
}

/** For --sample-rate auto: every exchange the kernel saw finish, and the records it could not send. */
export function latencyDemand(kernelStats: bigint[]): { seen: number; lost: number } {
  const k = (name: LatencyStat) => Number(kernelStats[LATENCY_STATS.indexOf(name)] ?? 0n);
  return {
    seen: k('measured_client') + k('measured_server') + k('unsampled_client') + k('unsampled_server'),
    lost: k('output_failures'),
  };
}

export { ms };

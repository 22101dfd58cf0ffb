/**
 * connection-tracker's figures and report: TCP set-up time, failed connects
 * by cause, TLS handshake time, connection reuse and pool efficiency.
 *
 * Definitions (also in docs/connection-tracker.md):
 * - opened: connections set up while the probe ran (a set-up time was
 *   measured), per side; closed: connections that closed while it ran.
 * - set-up time: client, SYN sent -> SYN-ACK received (what connect() waits
 *   for); server, SYN-ACK sent -> the final ACK (the kernel's first RTT sample).
 * - requests per connection: the exchanges of each connection that closed
 *   (every exchange, sampled or not, counted in the kernel).
 * - reused request ratio: of the client's requests (every exchange the kernel
 *   saw, sampled or not, on open and closed connections alike), the share sent
 *   on a connection that had carried one before (kernel counters). 1 - 1/N for
 *   one connection of N requests; 0 for a new connection per request. Per
 *   service, from the connections that closed.
 * - the top-level figures are the client side's (what callers experience);
 *   *_by_side gives both.
 * - new connections per second, requests per second: client side, over the run.
 * - idle gap: from the end of an exchange (its first response byte) to the
 *   start of the next request on the same connection.
 * - pool efficiency of a client service: the mean number of its connections
 *   busy with a request (sum of the client-view latencies / duration) against
 *   the mean number open (sum of the connections' open time in the run /
 *   duration); busy / open is how much of the pool is used.
 */
import os from 'node:os';
import { ROLE_CLIENT } from '../records.js';
import {
  METRIC_SETUP,
  METRIC_CONNECT_FAIL,
  METRIC_TLS,
  METRIC_TLS_LIBSSL,
  METRIC_LIFETIME,
  METRIC_REQUESTS,
  METRIC_IDLE,
  METRIC_TLS_CONNECT,
  RESULT_REFUSED,
  RESULT_TIMEOUT,
  RESULT_RESET,
  RESULT_UNREACH,
  RESULT_ABORTED,
  RESULT_OTHER,
} from '../records.js';
import {
  endpoint,
  readConnTable,
  allConnections,
  type AgedOpenTimes,
  readMeasureHistograms,
  readMeasureResults,
  readSvcTable,
  slotHistogram,
  type ConnSlot,
  type MeasureHistograms,
  type State,
} from '../wasm.js';
import { diff, emptyHistogram, mergeAll, percentile, type HistogramSnapshot } from '../histogram.js';
import type { SessionResult } from '../pipeline/session.js';
import type { ServiceDef } from '../filter/services.js';
import {
  scalar,
  type HistogramSeries,
  type MetricSet,
  type ProbeOutputs,
  type SamplingInfo,
  type ScalarSeries,
} from '../export/model.js';
import {
  buildLatencyReport,
  diffLatencyFigures,
  latencyDemand,
  latencyMetricSet,
  latencyProgress,
  readLatencyFigures,
  serviceIdentifier,
  exchangesSeen,
  samplingFactors,
  REPORT_VERSION,
  type LatencyFigures,
  type ReportContext,
} from './latency.js';
import { ms, percentilesMs } from './views.js';
import { k8sField, type PodNames, type PodRef } from '../k8s/names.js';

export const MEASURE_METRICS = {
  setup: METRIC_SETUP,
  connect_fail: METRIC_CONNECT_FAIL,
  tls: METRIC_TLS,
  tls_libssl: METRIC_TLS_LIBSSL,
  lifetime: METRIC_LIFETIME,
  requests: METRIC_REQUESTS,
  idle: METRIC_IDLE,
  tls_connect: METRIC_TLS_CONNECT,
} as const;
export type MeasureName = keyof typeof MEASURE_METRICS;

export const FAILURE_CAUSES = [
  ['refused', RESULT_REFUSED],
  ['timeout', RESULT_TIMEOUT],
  ['reset', RESULT_RESET],
  ['unreachable', RESULT_UNREACH],
  ['aborted', RESULT_ABORTED],
  ['other', RESULT_OTHER],
] as const;
export type FailureCause = (typeof FAILURE_CAUSES)[number][0];

type Sides = { client: HistogramSnapshot; server: HistogramSnapshot };

/** One (metric, role, port, peer) series of the decoder's service table. */
export interface MeasureSeries {
  key: string;
  metric: MeasureName;
  name: string;
  role: 'client' | 'server';
  port: number;
  peer?: string;
  hist: HistogramSnapshot;
  /** the service's pod (see ServiceFigure.k8s) */
  k8s?: PodRef;
}

export interface ConnectionFigures {
  latency: LatencyFigures;
  measures: Record<MeasureName, Sides>;
  /** [metric][result] */
  results: number[][];
  series: MeasureSeries[];
  /** client connections and their open time (for pools), read with the figures */
  conns: ConnSlot[];
  /** ns timestamps (CLOCK_MONOTONIC) of the span, for open times */
  nowNs: number;
  /** open times of the client connections aged out of the table */
  agedOpen: AgedOpenTimes;
}

const metricName = new Map<number, MeasureName>(Object.entries(MEASURE_METRICS).map(([k, v]) => [v, k as MeasureName]));

function monotonicNs(): number {
  return Number(process.hrtime.bigint());
}

export function readConnectionFigures(
  state: State,
  kernelStats: bigint[],
  defs: readonly ServiceDef[] = [],
  pods?: PodNames,
): ConnectionFigures {
  const conns = readConnTable(state, { histograms: false });
  const latency = readLatencyFigures(state, kernelStats, defs, conns, pods);
  // per metric the decoder has (build/meshprobe.wasm's METRIC__COUNT): one it lacks reads as empty
  const hs: Partial<MeasureHistograms> = readMeasureHistograms(state);
  const measures = Object.fromEntries(
    Object.entries(MEASURE_METRICS).map(([k, m]) => [
      k,
      hs[m] ?? { client: emptyHistogram(), server: emptyHistogram() },
    ]),
  ) as Record<MeasureName, Sides>;
  const identify = serviceIdentifier(allConnections(state, conns), defs, pods);
  const series = readSvcTable(state, { flush: false }).flatMap((s): MeasureSeries[] => {
    const metric = s.metric !== 0 ? metricName.get(s.metric) : undefined;
    if (metric === undefined) return [];
    const id = identify(s);
    return [
      {
        key: s.key.toString(),
        metric,
        name: id.name,
        ...(id.k8s ? { k8s: id.k8s } : {}),
        role: s.role === ROLE_CLIENT ? ('client' as const) : ('server' as const),
        port: s.port,
        ...(s.role === ROLE_CLIENT ? { peer: endpoint(s.raddr, s.port, s.family) } : {}),
        hist: slotHistogram(s),
      },
    ];
  });
  return {
    latency,
    measures,
    results: readMeasureResults(state),
    series,
    conns,
    nowNs: monotonicNs(),
    agedOpen: state.aged.clientOpen,
  };
}

export function diffConnectionFigures(cur: ConnectionFigures, prev: ConnectionFigures | undefined): ConnectionFigures {
  if (!prev) return cur;
  const before = new Map(prev.series.map((s) => [s.key, s]));
  return {
    latency: diffLatencyFigures(cur.latency, prev.latency),
    measures: Object.fromEntries(
      Object.entries(cur.measures).map(([k, v]) => [
        k,
        {
          client: diff(v.client, prev.measures[k as MeasureName].client),
          server: diff(v.server, prev.measures[k as MeasureName].server),
        },
      ]),
    ) as Record<MeasureName, Sides>,
    results: cur.results.map((row, m) => row.map((v, r) => v - (prev.results[m]?.[r] ?? 0))),
    series: cur.series
      .map((s) => ({ ...s, hist: diff(s.hist, before.get(s.key)?.hist) }))
      .filter((s) => s.hist.count > 0),
    conns: cur.conns,
    nowNs: cur.nowNs,
    agedOpen: cur.agedOpen,
  };
}

const pct = (h: HistogramSnapshot) => (h.count ? percentilesMs(h) : null);

/** Handshakes per TLS version: socket-level TLS records carry the minor version as their result. */
function tlsVersions(row: number[]): Record<string, number> {
  return { 'TLS 1.2': row[2] ?? 0, 'TLS 1.3': row[3] ?? 0, unknown: (row[0] ?? 0) + (row[1] ?? 0) };
}
const countPct = (h: HistogramSnapshot) =>
  h.count
    ? {
        p50: percentile(h, 0.5),
        p90: percentile(h, 0.9),
        p99: percentile(h, 0.99),
        p999: percentile(h, 0.999),
        mean: Math.round((h.sum_ns / h.count) * 100) / 100,
      }
    : null;

/** Of the requests on closed connections, the share sent on a connection already used. */
export function reusedRatio(requestsPerConn: HistogramSnapshot): number | null {
  const total = requestsPerConn.sum_ns; // the REQUESTS metric holds counts, summed exactly
  if (total <= 0) return null;
  const withRequests = requestsPerConn.count - (requestsPerConn.buckets.find(([i]) => i === 0)?.[1] ?? 0);
  return Math.round(((total - withRequests) / total) * 1e6) / 1e6;
}

/**
 * Mean connections open and busy per client service over the span. Open
 * time comes from the connection table: when it overflowed, some connections
 * are missing from it and the figures would be wrong, so there are none.
 */
function pools(f: ConnectionFigures, spanNs: number, startNs: number) {
  const open = new Map<string, number>(); // endpoint "addr:port" -> sum of open ns within the span
  const add = (key: string, from0: number, to: number) => {
    const from = Math.max(from0, startNs);
    if (to > from) open.set(key, (open.get(key) ?? 0) + (to - from));
  };
  for (const c of f.conns) {
    if (c.role !== ROLE_CLIENT || !c.opened) continue;
    add(endpoint(c.raddr, c.rport, c.family), c.start_ns, c.closed && c.end_ns ? c.end_ns : f.nowNs);
  }
  // the connections aged out of the table (src/pipeline/aging.ts): the last ones one by one, the older as sums
  const aged = f.agedOpen;
  for (const [key, list] of aged.recent) for (let i = 0; i < list.length; i += 2) add(key, list[i], list[i + 1]);
  const olderWhole = startNs <= aged.olderFromNs; // the span holds them all
  if (olderWhole) for (const [key, ns] of aged.olderNs) open.set(key, (open.get(key) ?? 0) + ns);
  const olderCut = !olderWhole && startNs < aged.olderToNs; // the span starts among them: not known
  const incomplete = f.latency.counters.conn_table_full > 0 || olderCut;
  const factor = samplingFactors(f.latency).client;
  return (peers: string[], busyMeasuredNs: number) => {
    if (incomplete) return null;
    const openNs = peers.reduce((a, p) => a + (open.get(p) ?? 0), 0);
    const busyNs = busyMeasuredNs * factor; // sampled requests stand for the others
    return {
      connections_open_avg: Math.round((openNs / spanNs) * 1000) / 1000,
      connections_busy_avg: Math.round((busyNs / spanNs) * 1000) / 1000,
      efficiency: openNs > 0 ? Math.round((busyNs / openNs) * 1000) / 1000 : null,
    };
  };
}

export function connectionsSection(f: ConnectionFigures, durationS: number, startNs: number) {
  const m = f.measures;
  const failedRow = f.results[METRIC_CONNECT_FAIL] ?? [];
  const failed = Object.fromEntries(FAILURE_CAUSES.map(([n, r]) => [n, failedRow[r] ?? 0])) as Record<
    FailureCause,
    number
  >;
  const seen = exchangesSeen(f.latency);
  const d = durationS > 0 ? durationS : 1;
  const rpc = m.requests.client;
  const k = f.latency.kernel;
  const pool = pools(f, d * 1e9, startNs);

  // by service: every (name, role) with any figure
  const groups = new Map<string, MeasureSeries[]>();
  // libssl handshakes have no socket, hence no service: they are in the totals only
  for (const s of f.series.filter((x) => x.metric !== 'tls_libssl')) {
    groups.set(`${s.name}\u0000${s.role}`, [...(groups.get(`${s.name}\u0000${s.role}`) ?? []), s]);
  }
  const busyBy = new Map<string, number>();
  for (const s of f.latency.services)
    busyBy.set(`${s.name}\u0000${s.role}`, (busyBy.get(`${s.name}\u0000${s.role}`) ?? 0) + s.hist.sum_ns);
  const by_service = [...groups.entries()]
    .map(([key, g]) => {
      const of = (metric: MeasureName) => mergeAll(g.filter((s) => s.metric === metric).map((s) => s.hist));
      const requests = of('requests');
      const role = g[0].role;
      const peers = [...new Set(g.map((s) => s.peer).filter((p): p is string => !!p))];
      return {
        service: g[0].name,
        role,
        port: g[0].port,
        ...(peers.length ? { peer: peers.length === 1 ? peers[0] : peers } : {}),
        opened: of('setup').count,
        closed: requests.count,
        failed: of('connect_fail').count,
        setup_ms: pct(of('setup')),
        tls_handshake_ms: pct(of('tls')),
        tls_handshake_libssl_ms: pct(of('tls_libssl')),
        tls_after_connect_ms: pct(of('tls_connect')),
        requests_per_connection: countPct(requests),
        reused_request_ratio: reusedRatio(requests),
        lifetime_ms: pct(of('lifetime')),
        idle_gap_ms: pct(of('idle')),
        ...(role === 'client' ? { pool: pool(peers, busyBy.get(key) ?? 0) } : {}),
        ...k8sField(g.find((s) => s.k8s)?.k8s),
      };
    })
    .sort((a, b) => b.opened + b.closed - (a.opened + a.closed));

  return {
    opened: m.setup.client.count + m.setup.server.count,
    opened_by_side: { client: m.setup.client.count, server: m.setup.server.count },
    closed: m.requests.client.count + m.requests.server.count,
    closed_by_side: { client: m.requests.client.count, server: m.requests.server.count },
    failed: { ...failed, total: Object.values(failed).reduce((a, b) => a + b, 0) },
    setup_ms: pct(m.setup.client),
    setup_ms_by_side: { client: pct(m.setup.client), server: pct(m.setup.server) },
    tls_handshake_ms: pct(m.tls.client),
    tls_handshake_ms_by_side: { client: pct(m.tls.client), server: pct(m.tls.server) },
    tls_handshakes: { client: m.tls.client.count, server: m.tls.server.count },
    tls_versions: tlsVersions(f.results[METRIC_TLS] ?? []),
    tls_handshake_libssl_ms: {
      client: pct(m.tls_libssl.client),
      server: pct(m.tls_libssl.server),
      count: m.tls_libssl.client.count + m.tls_libssl.server.count,
    },
    tls_after_connect_ms: { client: pct(m.tls_connect.client), server: pct(m.tls_connect.server) },
    reuse: {
      requests_per_connection: countPct(rpc),
      reused_request_ratio: seen.client > 0 ? Math.round((k.reused_client / seen.client) * 1e6) / 1e6 : null,
      new_connections_per_s: Math.round((m.setup.client.count / d) * 1000) / 1000,
      requests_per_s: Math.round((seen.client / d) * 1000) / 1000,
    },
    lifetime_ms: pct(m.lifetime.client),
    lifetime_ms_by_side: { client: pct(m.lifetime.client), server: pct(m.lifetime.server) },
    idle_gap_ms: pct(m.idle.client),
    idle_gap_ms_by_side: { client: pct(m.idle.client), server: pct(m.idle.server) },
    by_service,
  };
}

export function buildConnectionReport(r: SessionResult, ctx: ReportContext) {
  const base = buildLatencyReport(r, ctx);
  const f = readConnectionFigures(r.state, r.kernelStats, ctx.services, ctx.pods);
  f.nowNs = Number(r.endNs);
  return {
    timestamp: base.timestamp,
    duration_seconds: base.duration_seconds,
    probe: 'connection-tracker' as const,
    report_version: REPORT_VERSION,
    host: base.host,
    kernel: base.kernel,
    connections: connectionsSection(f, base.duration_seconds, Number(r.startNs)),
    metrics: base.metrics,
    pipeline: base.pipeline,
    ...(base.k8s ? { k8s: base.k8s } : {}),
    ...(base.exports ? { exports: base.exports } : {}),
  };
}
export type ConnectionReport = ReturnType<typeof buildConnectionReport>;

export function connectionMetricSet(
  f: ConnectionFigures,
  span: { start: Date; end: Date; cumulative: boolean },
  sampling: SamplingInfo,
  pods?: PodNames,
): MetricSet {
  const base = latencyMetricSet(f.latency, span, sampling, pods);
  const help: Record<MeasureName, string> = {
    setup: 'TCP set-up time: client SYN sent to SYN-ACK received; server SYN-ACK sent to the final ACK',
    connect_fail: 'Time from SYN to the failure of connects that failed',
    tls: 'TLS handshake time from the TLS records on the socket: ClientHello to the handshake done on this side',
    tls_libssl: 'TLS handshake time from uprobes on libssl (SSL_do_handshake, SSL_connect, SSL_accept)',
    lifetime: 'Lifetime of connections that closed',
    requests: 'Requests (exchanges) per closed connection (a count, not seconds)',
    idle: 'Idle gap between exchanges on a connection',
    tls_connect:
      'TCP connected to TLS handshake done on this side: what the application waits for after connect(), library set-up included',
  };
  const histName: Record<MeasureName, string> = {
    setup: 'connection_setup_duration',
    connect_fail: 'connection_failure_duration',
    tls: 'tls_handshake_duration',
    tls_libssl: 'tls_handshake_libssl_duration',
    lifetime: 'connection_lifetime',
    requests: '',
    idle: 'connection_idle_gap',
    tls_connect: 'tls_after_connect_duration',
  };
  const histograms: HistogramSeries[] = [];
  for (const [k, v] of Object.entries(f.measures) as [MeasureName, Sides][]) {
    if (k === 'requests') continue; // a count: as counters below
    for (const side of ['client', 'server'] as const)
      histograms.push({ name: histName[k], help: help[k], labels: { side }, hist: v[side] });
  }
  // one series per (figure, service, role, pod labels): slots of one name are merged (InfluxDB would keep only
  // one of equal tags); pods gone past their grace period have none, pods beyond --max-pods are "other"
  const merged = new Map<string, { s: MeasureSeries; labels: Record<string, string> }>();
  for (const s0 of f.series) {
    if (s0.metric === 'requests' || s0.metric === 'tls_libssl') continue;
    if (pods?.expired(s0.k8s)) continue;
    const s = pods ? { ...s0, name: pods.serviceLabel(s0.name, s0.k8s, s0.port) } : s0;
    const labels = pods ? pods.labels(s.k8s) : {};
    const key = `${s.metric}\u0000${s.name}\u0000${s.role}\u0000${JSON.stringify(labels)}`;
    const m = merged.get(key);
    merged.set(key, m ? { s: { ...m.s, hist: mergeAll([m.s.hist, s.hist]) }, labels } : { s, labels });
  }
  for (const { s, labels } of merged.values()) {
    histograms.push({
      name: `service_${histName[s.metric]}`,
      help: `${help[s.metric]}, per service`,
      labels: { service: s.name, role: s.role, ...labels },
      hist: s.hist,
    });
  }
  const c = scalar;
  const counters: ScalarSeries[] = [
    ...(['client', 'server'] as const).map((side) =>
      c('connections_opened', 'Connections set up', f.measures.setup[side].count, { side }),
    ),
    ...(['client', 'server'] as const).map((side) =>
      c('connections_closed', 'Connections closed', f.measures.requests[side].count, { side }),
    ),
    ...(['client', 'server'] as const).map((side) =>
      c('connection_requests', 'Requests on connections that closed', f.measures.requests[side].sum_ns, { side }),
    ),
    ...FAILURE_CAUSES.map(([cause, r]) =>
      c('connections_failed', 'Connects that failed, by cause', f.results[METRIC_CONNECT_FAIL]?.[r] ?? 0, { cause }),
    ),
  ];
  const seen = exchangesSeen(f.latency);
  const k = f.latency.kernel;
  counters.push(
    c('requests_reused', 'Client requests sent on a connection that carried one before', k.reused_client, {
      side: 'client',
    }),
    c('requests_reused', 'Client requests sent on a connection that carried one before', k.reused_server, {
      side: 'server',
    }),
  );
  const gauges: ScalarSeries[] =
    seen.client > 0
      ? [
          c(
            'reused_request_ratio',
            'Share of client requests sent on a connection already used',
            k.reused_client / seen.client,
          ),
        ]
      : [];
  const spanS = Math.max(1e-9, (span.end.getTime() - span.start.getTime()) / 1000);
  const section = connectionsSection(f, spanS, f.nowNs - spanS * 1e9);
  const poolRefs = new Map(f.series.filter((s) => s.k8s).map((s) => [s.name, s.k8s]));
  for (const s of section.by_service) {
    if (s.role !== 'client' || !s.pool) continue;
    const ref = poolRefs.get(s.service);
    if (pods?.expired(ref)) continue;
    const labels = pods
      ? { service: pods.serviceLabel(s.service, ref, s.port), ...pods.labels(ref) }
      : { service: s.service };
    gauges.push(
      c(
        'pool_connections_open',
        'Mean connections open to the service over the span',
        s.pool.connections_open_avg,
        labels,
      ),
      c(
        'pool_connections_busy',
        'Mean connections busy with a request over the span',
        s.pool.connections_busy_avg,
        labels,
      ),
    );
  }
  return {
    ...base,
    probe: 'connection-tracker',
    histograms: [...base.histograms, ...histograms],
    counters: [...base.counters, ...counters],
    gauges: [...base.gauges, ...gauges],
  };
}

export function connectionIntervalReport(
  f: ConnectionFigures,
  span: { start: Date; end: Date; seq: number },
  sampling: SamplingInfo,
) {
  const s = (span.end.getTime() - span.start.getTime()) / 1000;
  return {
    type: 'interval',
    probe: 'connection-tracker',
    report_version: REPORT_VERSION,
    host: os.hostname(),
    seq: span.seq,
    start: span.start.toISOString(),
    end: span.end.toISOString(),
    duration_seconds: s,
    connections: connectionsSection(f, s, f.nowNs - s * 1e9),
    sampling,
  };
}

export function connectionOutputs(services: readonly ServiceDef[], pods?: PodNames): ProbeOutputs<ConnectionFigures> {
  return {
    read: (state, k) => readConnectionFigures(state, k, services, pods),
    diff: diffConnectionFigures,
    interval: connectionIntervalReport,
    metricSet: (f, span, sampling) => connectionMetricSet(f, span, sampling, pods),
    progress: (f) => latencyProgress(f.latency),
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

export function connectionSummary(rep: ConnectionReport): string {
  const c = rep.connections;
  const setup = c.setup_ms ? `set-up p50 ${c.setup_ms.p50} ms p99 ${c.setup_ms.p99} ms` : 'no set-up seen';
  const tls = c.tls_handshake_ms
    ? `; TLS p50 ${c.tls_handshake_ms.p50} ms (${c.tls_handshakes.client} client handshakes)`
    : '';
  return (
    `connection-tracker: ${c.opened} opened, ${c.closed} closed, ${c.failed.total} failed in ${rep.duration_seconds} s; ${setup}${tls}; ` +
    `reused ${c.reuse.reused_request_ratio ?? '-'} of requests; lost ${rep.metrics.events.lost}`
  );
}

export { ms };

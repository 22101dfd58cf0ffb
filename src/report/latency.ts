/**
 * latency-probe's report: the client, server and network views, each
 * connection and each service, the event counters and every loss.
 */
import os from 'node:os';
import { readFileSync } from 'node:fs';
import { ROLE_CLIENT, ROLE_SERVER, CONN_F_ROLE_INFERRED } from '../records.js';
import { readConnTable, readCounters, readGlobalHistograms, readSvcTable, type ConnSlot, type ServiceSlot } from '../wasm.js';
import { LATENCY_STATS } from '../probes/latency.js';
import type { SessionResult } from '../pipeline/session.js';
import { ms, percentilesMs, viewSummary, type ViewSummary } from './views.js';

export const REPORT_VERSION = 1;

const roleName = (r: number) => (r === ROLE_CLIENT ? 'client' : r === ROLE_SERVER ? 'server' : 'unknown');
const endpoint = (addr: string, port: number, family: number) => (family === 10 ? `[${addr}]:${port}` : `${addr}:${port}`);

function procComm(tgid: number): string | undefined {
  try {
    return readFileSync(`/proc/${tgid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * What a service is: a server is named after the process that owns the
 * listening port, "comm:port"; a client's service is the peer it talks to,
 * named after that server when the probe saw its side too, else "addr:port".
 */
export function nameServices(svcs: ServiceSlot[], conns: ConnSlot[]): Map<ServiceSlot, string> {
  const serverComm = new Map<number, string>(); // lport -> comm
  const serverAt = new Map<string, number>(); // "laddr|lport" -> lport
  for (const c of conns) {
    if (c.role !== ROLE_SERVER) continue;
    if (c.comm && !serverComm.has(c.lport)) serverComm.set(c.lport, c.comm);
    serverAt.set(`${c.laddr}|${c.lport}`, c.lport);
  }
  const names = new Map<ServiceSlot, string>();
  for (const s of svcs) {
    if (s.role === ROLE_SERVER) {
      names.set(s, `${serverComm.get(s.port) ?? procComm(s.tgid) ?? `pid${s.tgid}`}:${s.port}`);
    } else {
      const local = serverAt.get(`${s.raddr}|${s.port}`);
      names.set(s, local !== undefined && serverComm.has(local) ? `${serverComm.get(local)}:${local}` : endpoint(s.raddr, s.port, s.family));
    }
  }
  return names;
}

export interface LatencyReport {
  timestamp: string;
  duration_seconds: number;
  probe: 'latency-probe';
  report_version: number;
  host: string;
  kernel: string;
  metrics: {
    view: 'client' | 'server' | 'none';
    total_requests: number;
    latency_histogram: ViewSummary['latency_histogram'];
    percentiles: ViewSummary['percentiles'];
    client: ViewSummary;
    server: ViewSummary;
    network: ViewSummary;
    connections: unknown[];
    services: unknown[];
    events: { send: number; receive: number; cleanup: number; lost: number };
    loss: Record<string, number>;
    overhead_analysis: Record<string, unknown>;
  };
  pipeline: Record<string, unknown>;
}

export function buildLatencyReport(r: SessionResult, opts: { filters: Record<string, unknown> }): LatencyReport {
  const g = readGlobalHistograms(r.state);
  const counters = readCounters(r.state);
  const conns = readConnTable(r.state);
  const svcs = readSvcTable(r.state);
  const ks = Object.fromEntries(LATENCY_STATS.map((n, i) => [n, Number(r.kernelStats[i] ?? 0n)])) as Record<(typeof LATENCY_STATS)[number], number>;
  const client = viewSummary(g.client);
  const server = viewSummary(g.server);
  const network = viewSummary(g.network);
  const view = client.total_requests > 0 ? 'client' : server.total_requests > 0 ? 'server' : 'none';
  const top = view === 'server' ? server : client;
  const names = nameServices(svcs, conns);
  const durationS = Number(r.endNs - r.startNs) / 1e9;

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
      requests: c.requests,
      percentiles: c.hist && c.hist.count > 0 ? percentilesMs(c.hist) : null,
      srtt_ms: c.srtt_us / 1000,
      bytes_sent: c.bytes_sent,
      bytes_received: c.bytes_received,
      closed: c.closed,
    }));

  const services = svcs
    .sort((a, b) => b.requests - a.requests)
    .map((s) => ({
      service: names.get(s)!,
      role: roleName(s.role),
      port: s.port,
      ...(s.role === ROLE_CLIENT ? { peer: endpoint(s.raddr, s.port, s.family) } : {}),
      requests: s.requests,
      percentiles: s.hist ? percentilesMs(s.hist) : null,
      latency_histogram: s.hist ? viewSummary(s.hist).latency_histogram : null,
    }));

  // A full ring fails the kernel's output (counted per record in output_failures)
  // and perf also reports it as lost samples of up to 64 records: not the same unit, never added.
  const lostRecords = ks.output_failures;
  return {
    timestamp: r.startedAt.toISOString(),
    duration_seconds: Math.round(durationS * 1000) / 1000,
    probe: 'latency-probe',
    report_version: REPORT_VERSION,
    host: os.hostname(),
    kernel: os.release(),
    metrics: {
      view,
      total_requests: top.total_requests,
      latency_histogram: top.latency_histogram,
      percentiles: top.percentiles,
      client,
      server,
      network,
      connections,
      services,
      events: { send: ks.send, receive: ks.receive, cleanup: ks.cleanup, lost: lostRecords },
      loss: {
        records_lost: ks.output_failures,
        perf_lost_samples: counters.lost_records,
        perf_lost_notices: counters.lost_events,
        sockets_evicted: ks.evicted,
        exchanges_discarded: ks.discarded,
        connection_table_full: counters.conn_table_full,
        service_table_full: counters.svc_table_full,
        unknown_records: counters.unknown_records,
        unknown_role: counters.unknown_role,
      },
      overhead_analysis: overheadAnalysis(client, server, network),
    },
    pipeline: {
      hooks: Object.fromEntries(r.hooks.map((h) => [h.slot, h.chosen?.name])),
      filters: opts.filters,
      workers: r.pool.workers,
      batches: r.pool.batches,
      bytes: r.pool.bytes,
      records: counters.records_total,
      sockets_tracked: ks.tracked,
      sockets_filtered: ks.filtered,
      records_emitted: ks.emitted,
      programs: r.programs.map((p) => ({
        name: p.name,
        id: p.id,
        run_count: Number(p.runCount),
        run_time_ns: Number(p.runTimeNs),
        ns_per_run: p.runCount > 0n ? Math.round(Number(p.runTimeNs) / Number(p.runCount)) : null,
      })),
    },
  };
}

/**
 * Where the time goes, from means (means add up; percentiles do not): what
 * clients observe = the servers' processing + everything between them
 * (kernel, network and, with a mesh, sidecars). Exact when the client and
 * server views cover the same requests (both ends on this host, one filter).
 */
export function overheadAnalysis(client: ViewSummary, server: ViewSummary, network: ViewSummary): Record<string, unknown> {
  const both = client.total_requests > 0 && server.total_requests > 0;
  const round = (x: number) => Math.round(x * 1e4) / 1e4;
  return {
    total_ms: client.total_requests > 0 ? client.mean_ms : null,
    application_ms: server.total_requests > 0 ? server.mean_ms : null,
    kernel_processing_ms: both ? round(Math.max(0, client.mean_ms - server.mean_ms)) : null,
    mesh_processing_ms: null,
    network_srtt_ms: network.total_requests > 0 ? network.percentiles.p50 : null,
    method: 'means: total = client view, application = server view, kernel = total - application (kernel, network and ' +
      'anything else between client and server); mesh needs sidecar recognition, which this version does not do',
  };
}

export function summaryLine(rep: LatencyReport): string {
  const m = rep.metrics;
  const v = (name: string, s: ViewSummary) =>
    s.total_requests > 0 ? `${name} p50 ${s.percentiles.p50} ms p99 ${s.percentiles.p99} ms (${s.total_requests})` : `${name} none`;
  return `latency-probe: ${m.total_requests} requests in ${rep.duration_seconds} s; ${v('client', m.client)}; ` +
    `${v('server', m.server)}; ${m.connections.length} connections; lost ${m.events.lost}`;
}

export { ms };

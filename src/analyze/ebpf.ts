/**
 * The kernel's side: a latency-probe (or connection-tracker) JSON report, or
 * a json-stream (NDJSON) file, whose last {"type":"summary"} line is the
 * whole report.
 *
 * What is used: metrics.client and metrics.server (the views over all the
 * traffic, with their raw buckets), metrics.services[] (per service and role:
 * requests, requests_estimated, percentiles, mean_ms), duration_seconds and
 * timestamp (the start), and metrics.overhead_analysis, copied as it is.
 */
import { usageError, type MeshprobeError } from '../errors.js';
import { jsonError, parseReportText, type ReportSource, type ReportTextProblem } from '../input.js';
import type { ServiceDef } from '../filter/services.js';

export type Role = 'client' | 'server';

/** [lower_ns, upper_ns (exclusive), count] */
export type FineBuckets = [number, number, number][];

export interface ProbeFigures {
  requests: number;
  requests_estimated?: number;
  percentiles: Partial<Record<'p50' | 'p75' | 'p90' | 'p95' | 'p99' | 'p999', number>> | null;
  mean_ms: number | null;
  /** the raw histogram, when the report has it for exactly these requests */
  buckets?: FineBuckets;
}

export interface ProbeService extends ProbeFigures {
  /** the name in the report */
  service: string;
  role: Role;
  port?: number;
  peer?: string | string[];
  /** the name after --services renaming (else = service) */
  name: string;
  /** the service's pod, when the probe named one (its report's "k8s" field) */
  k8s?: { namespace: string; pod: string; container?: string };
}

export interface ProbeReport {
  file: string;
  probe: string;
  startedAt?: Date;
  durationS?: number;
  views: Partial<Record<Role, ProbeFigures>>;
  services: ProbeService[];
  overhead?: Record<string, unknown>;
  /** from a json-stream file: the summary line's number */
  streamLine?: number;
}

const num = (x: unknown): number | undefined => (typeof x === 'number' && Number.isFinite(x) ? x : undefined);

function isFine(x: unknown): x is FineBuckets {
  return (
    Array.isArray(x) && x.every((b) => Array.isArray(b) && b.length === 3 && b.every((v) => typeof v === 'number'))
  );
}

function figures(o: Record<string, unknown>, countKey: 'requests' | 'total_requests'): ProbeFigures {
  const p = o.percentiles;
  const percentiles = p && typeof p === 'object' ? (p as ProbeFigures['percentiles']) : null;
  const est = num(o[`${countKey}_estimated`]);
  return {
    requests: num(o[countKey]) ?? 0,
    ...(est !== undefined ? { requests_estimated: est } : {}),
    percentiles,
    mean_ms: num(o.mean_ms) ?? null,
    ...(isFine(o.buckets) ? { buckets: o.buckets } : {}),
  };
}

/** Parses a report (JSON) or a json-stream (NDJSON, its last summary line). */
export function readProbeReport(text: ReportSource, file: string, services: readonly ServiceDef[] = []): ProbeReport {
  const what = `--ebpf-probe ${file}`;
  const { report: r, summaryLine } = parseReportText(text, (problem) => probeTextError(problem, text, what));
  const m = r.metrics;
  if (!m || typeof m !== 'object') throw usageError(`${what} has no "metrics": is it a latency-probe report?`);
  const metrics = m as Record<string, unknown>;
  const views: ProbeReport['views'] = {};
  for (const v of ['client', 'server'] as const) {
    const o = metrics[v];
    if (o && typeof o === 'object') views[v] = figures(o as Record<string, unknown>, 'total_requests');
  }
  const svc = probeServices(metrics.services, what, services);
  shareViewHistograms(views, svc);
  const started = typeof r.timestamp === 'string' ? new Date(r.timestamp) : undefined;
  const durationS = num(r.duration_seconds);
  const overhead = metrics.overhead_analysis;
  return {
    file,
    probe: typeof r.probe === 'string' ? r.probe : 'latency-probe',
    ...(started && !Number.isNaN(started.getTime()) ? { startedAt: started } : {}),
    ...(durationS !== undefined ? { durationS } : {}),
    views,
    services: svc,
    ...(overhead && typeof overhead === 'object' && !Array.isArray(overhead)
      ? { overhead: overhead as Record<string, unknown> }
      : {}),
    ...(summaryLine !== undefined ? { streamLine: summaryLine } : {}),
  };
}

/** What is wrong with the text of --ebpf-probe, as analyze-latency says it. */
function probeTextError(problem: ReportTextProblem, text: ReportSource, what: string): MeshprobeError {
  switch (problem.kind) {
    case 'empty':
      return usageError(`${what} is empty`);
    case 'not-json':
      return problem.line === undefined
        ? jsonError(problem.error, text, what)
        : usageError(`${what} line ${problem.line}: not valid JSON`);
    case 'not-object':
      return usageError(
        problem.line === undefined
          ? `${what} is not a latency-probe report (expected a JSON object)`
          : `${what} line ${problem.line} is not a JSON object: not a latency-probe report`,
      );
    case 'no-summary':
    case 'several-documents':
      return usageError(
        `${what} is a json-stream without its {"type":"summary"} line (did the probe end before writing it?): run it to the end, or use its --output report`,
      );
  }
}

/** metrics.services[]: each needs a name and a client/server role. */
function probeServices(list: unknown, what: string, defs: readonly ServiceDef[]): ProbeService[] {
  return (Array.isArray(list) ? (list as unknown[]) : []).map((x, i) => {
    if (!x || typeof x !== 'object') throw usageError(`${what}: metrics.services[${i}] is not an object`);
    const o = x as Record<string, unknown>;
    if (typeof o.service !== 'string' || (o.role !== 'client' && o.role !== 'server')) {
      throw usageError(`${what}: metrics.services[${i}] lacks a service name or a client/server role`);
    }
    const port = num(o.port);
    const peer = typeof o.peer === 'string' || Array.isArray(o.peer) ? (o.peer as string | string[]) : undefined;
    const k8s = podOf(o.k8s);
    return {
      service: o.service,
      role: o.role,
      ...(port !== undefined ? { port } : {}),
      ...(peer !== undefined ? { peer } : {}),
      ...(k8s ? { k8s } : {}),
      ...figures(o, 'requests'),
      name: rename(o.service, o.role, port, defs),
    };
  });
}

/** A service entry's "k8s" field: namespace and pod (strings), container when there. */
function podOf(x: unknown): ProbeService['k8s'] {
  if (!x || typeof x !== 'object') return undefined;
  const o = x as Record<string, unknown>;
  if (typeof o.namespace !== 'string' || typeof o.pod !== 'string') return undefined;
  return {
    namespace: o.namespace,
    pod: o.pod,
    ...(typeof o.container === 'string' ? { container: o.container } : {}),
  };
}

/** A service's raw histogram is its view's when it is the only service of that role, with all its requests. */
function shareViewHistograms(views: ProbeReport['views'], services: ProbeService[]): void {
  for (const role of ['client', 'server'] as const) {
    const view = views[role];
    const ofRole = services.filter((s) => s.role === role && s.requests > 0);
    if (view?.buckets && ofRole.length === 1 && !ofRole[0].buckets && ofRole[0].requests === view.requests)
      ofRole[0].buckets = view.buckets;
  }
}

/**
 * The name a --services file gives a service the probe named by default
 * (comm:port, addr:port): the first entry whose ports include its port and,
 * if the entry lists comm, whose comm matches. Entries that select by cgroup
 * or netns only cannot be told from a report and are not used.
 */
function rename(name: string, role: Role, port: number | undefined, defs: readonly ServiceDef[]): string {
  if (!defs.length || port === undefined) return name;
  if (defs.some((d) => d.name === name)) return name; // already a --services name
  const comm = role === 'server' && /^[^:]+:\d+$/.test(name) ? name.slice(0, name.lastIndexOf(':')) : undefined;
  for (const d of defs) {
    if (!d.ports.length || !d.ports.includes(port)) continue;
    if (d.comm.length && (!comm || !d.comm.includes(comm))) continue;
    return d.name;
  }
  return name;
}

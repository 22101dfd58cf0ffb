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
import { usageError } from '../errors.js';
import { jsonError } from './input.js';
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
export function readProbeReport(text: string, file: string, services: readonly ServiceDef[] = []): ProbeReport {
  const what = `--ebpf-probe ${file}`;
  if (text.trim() === '') throw usageError(`${what} is empty`);
  let doc: unknown;
  let streamLine: number | undefined;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    // NDJSON: one object per line
    const lines = text.split('\n');
    let parsedAny = false;
    for (let i = lines.length - 1; i >= 0; i--) {
      const l = lines[i].trim();
      if (!l) continue;
      let o: unknown;
      try {
        o = JSON.parse(l);
        if (!o || typeof o !== 'object' || Array.isArray(o)) throw new Error('not an object');
      } catch {
        if (i === lines.length - 1 || lines.slice(i + 1).every((x) => !x.trim())) continue; // a last line cut short
        if (!parsedAny) throw jsonError(e as Error, text, what);
        throw usageError(`${what} line ${i + 1}: not valid JSON`);
      }
      parsedAny = true;
      if (o && typeof o === 'object' && (o as { type?: unknown }).type === 'summary') {
        doc = o;
        streamLine = i + 1;
        break;
      }
    }
    if (doc === undefined) {
      if (!parsedAny) throw jsonError(e as Error, text, what);
      throw usageError(
        `${what} is a json-stream without its {"type":"summary"} line (did the probe end before writing it?): run it to the end, or use its --output report`,
      );
    }
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc))
    throw usageError(`${what} is not a latency-probe report (expected a JSON object)`);
  const r = doc as Record<string, unknown>;
  const m = r.metrics;
  if (!m || typeof m !== 'object') throw usageError(`${what} has no "metrics": is it a latency-probe report?`);
  const metrics = m as Record<string, unknown>;
  const views: ProbeReport['views'] = {};
  for (const v of ['client', 'server'] as const) {
    const o = metrics[v];
    if (o && typeof o === 'object') views[v] = figures(o as Record<string, unknown>, 'total_requests');
  }
  const list = Array.isArray(metrics.services) ? (metrics.services as unknown[]) : [];
  const svc: ProbeService[] = [];
  list.forEach((x, i) => {
    if (!x || typeof x !== 'object') throw usageError(`${what}: metrics.services[${i}] is not an object`);
    const o = x as Record<string, unknown>;
    if (typeof o.service !== 'string' || (o.role !== 'client' && o.role !== 'server')) {
      throw usageError(`${what}: metrics.services[${i}] lacks a service name or a client/server role`);
    }
    const port = num(o.port);
    const peer = typeof o.peer === 'string' || Array.isArray(o.peer) ? (o.peer as string | string[]) : undefined;
    svc.push({
      service: o.service,
      role: o.role,
      ...(port !== undefined ? { port } : {}),
      ...(peer !== undefined ? { peer } : {}),
      ...figures(o, 'requests'),
      name: rename(o.service, o.role, port, services),
    });
  });
  // a service's raw histogram is its view's when it is the only service of that role
  for (const role of ['client', 'server'] as const) {
    const view = views[role];
    const ofRole = svc.filter((s) => s.role === role && s.requests > 0);
    if (view?.buckets && ofRole.length === 1 && !ofRole[0].buckets && ofRole[0].requests === view.requests)
      ofRole[0].buckets = view.buckets;
  }
  const started = typeof r.timestamp === 'string' ? new Date(r.timestamp) : undefined;
  const overhead = metrics.overhead_analysis;
  return {
    file,
    probe: typeof r.probe === 'string' ? r.probe : 'latency-probe',
    ...(started && !Number.isNaN(started.getTime()) ? { startedAt: started } : {}),
    ...(num(r.duration_seconds) !== undefined ? { durationS: num(r.duration_seconds) } : {}),
    views,
    services: svc,
    ...(overhead && typeof overhead === 'object' && !Array.isArray(overhead)
      ? { overhead: overhead as Record<string, unknown> }
      : {}),
    ...(streamLine !== undefined ? { streamLine } : {}),
  };
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

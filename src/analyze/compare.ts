/**
 * The comparison: each mesh histogram beside the probe's view of the same
 * service, the differences, and why they are likely to differ, computed from
 * the figures (bucket bounds, Istio's truncation, request counts, windows,
 * the probe's overhead analysis), never a fixed sentence.
 *
 * Which of the probe's views a mesh figure is compared with:
 * - Istio reporter="destination" (the server's sidecar, inbound) and Hubble
 *   reporter="server": the probe's server view of the service, the app's own
 *   time from its first read of a request to its first write of the answer.
 *   The mesh's figure adds the proxy's time around it (and, for Istio, is
 *   truncated to whole ms), so mesh >= kernel by the proxy's overhead.
 * - Istio reporter="source" (the client's sidecar, outbound) and Hubble
 *   reporter="client": the probe's client view of the service (the calling
 *   app's wait from its write to the first read of the answer). That wait
 *   holds the sidecar's timing plus the app's hops to its own sidecar, so
 *   kernel >= mesh there.
 * When the probe saw only the other side of a service, that side is used
 * and the likely cause says so.
 */
import type { AnalysisReport, Difference, EbpfView, MeshView, ServiceComparison } from './types.js';
import type { FineBuckets, ProbeFigures, ProbeReport, ProbeService, Role } from './ebpf.js';
import { boundsMs, meshQuantile, requestsOf, type MeshHistogram, type MeshSource } from './mesh.js';
import { normalizeBuckets, quantileDetail, type Bucket } from './quantile.js';

export const QUANTILES = [
  ['p50', 0.5],
  ['p90', 0.9],
  ['p99', 0.99],
] as const;
export type QName = (typeof QUANTILES)[number][0];

export interface MeshInput {
  source: MeshSource;
  /** a file name or the Prometheus URL */
  input: string;
  /** counts over a query range (true) or totals since the proxies started (a scrape) */
  ranged: boolean;
  histograms: MeshHistogram[];
}

export interface AnalyzeOptions {
  probe: ProbeReport;
  mesh: MeshInput[];
  /** --service-map: probe service name -> mesh service name */
  serviceMap?: ReadonlyMap<string, string>;
  inputs: AnalysisReport['inputs'];
  /** --prometheus-url: the range and time of the queries */
  live?: { rangeS: number; time: Date };
  notes?: string[];
  now?: Date;
}

export const WHOLE_PROBE = '(whole probe)';

/** A number for a sentence: at most 3 decimals, no trailing zeros. */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const r = Math.round(x * 1000) / 1000;
  return String(Object.is(r, -0) ? 0 : r);
}

/** A bucket bound for display (float noise of unit conversion removed). */
export function fmtBound(x: number | null): string {
  if (x === null || x === Infinity) return '+Inf';
  return String(Number(x.toPrecision(12)));
}

export function roleFor(h: MeshHistogram): Role {
  if (h.source === 'istio') return h.reporter === 'source' ? 'client' : 'server';
  return h.reporter === 'client' ? 'client' : 'server';
}

const label = (h: MeshHistogram) => `${h.source} reporter=${h.reporter}`;

/** Probe service names a mesh histogram matches. */
function matches(h: MeshHistogram, p: ProbeService, map: ReadonlyMap<string, string>): boolean {
  const aliases = new Set(h.aliases);
  if (h.name) aliases.add(h.name.toLowerCase());
  const mapped = map.get(p.service.toLowerCase()) ?? map.get(p.name.toLowerCase());
  if (mapped !== undefined) return aliases.has(mapped);
  const keys = new Set([p.name.toLowerCase(), p.service.toLowerCase()]);
  const m = /^(.+):\d+$/.exec(p.name);
  if (m) keys.add(m[1].toLowerCase());
  for (const k of keys) if (aliases.has(k)) return true;
  // a pod's service (the probe's "k8s" field): the mesh's workload (or app) is the pod's owner, in its namespace
  const pod = p.k8s;
  if (pod && (h.namespace === null || h.namespace.toLowerCase() === pod.namespace.toLowerCase()))
    for (const a of aliases) if (podOfWorkload(pod.pod, a)) return true;
  return false;
}

/**
 * Does pod `pod` belong to workload `workload`, by the names the controllers give their pods: a
 * Deployment's `<workload>-<ReplicaSet hash>-<5 chars>`, a StatefulSet's `<workload>-<ordinal>`, a
 * DaemonSet's (or a bare ReplicaSet's, a Job's) `<workload>-<5 chars>`.
 */
export function podOfWorkload(pod: string, workload: string): boolean {
  const w = workload.toLowerCase();
  const p = pod.toLowerCase();
  if (!w || !p.startsWith(`${w}-`)) return false;
  const rest = p.slice(w.length + 1);
  return /^[a-z0-9]{1,10}-[a-z0-9]{5}$/.test(rest) || /^\d+$/.test(rest) || /^[a-z0-9]{5}$/.test(rest);
}

interface Picked {
  figures: ProbeFigures;
  view: Role;
  probeService: string;
  fellBack: boolean;
  /** mesh_processing_ms of the probe's overhead analysis for this service (or overall) */
  meshProcessingMs?: number;
}

const isRecord = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null;

function meshProcessing(probe: ProbeReport, service?: string): number | undefined {
  const o = probe.overhead;
  if (!o) return undefined;
  if (service && Array.isArray(o.by_service)) {
    const s = (o.by_service as unknown[]).find((x) => isRecord(x) && x.service === service);
    if (isRecord(s) && typeof s.mesh_processing_ms === 'number') return s.mesh_processing_ms;
  }
  return typeof o.mesh_processing_ms === 'number' ? o.mesh_processing_ms : undefined;
}

function pick(entries: ProbeService[], want: Role, probe: ProbeReport): Picked | undefined {
  const best = (role: Role) =>
    entries
      .filter((e) => e.role === role)
      .sort((a, b) => b.requests - a.requests)
      .at(0);
  const e = best(want) ?? best(want === 'server' ? 'client' : 'server');
  if (!e) return undefined;
  return {
    figures: e,
    view: e.role,
    probeService: e.service,
    fellBack: e.role !== want,
    meshProcessingMs: meshProcessing(probe, e.service),
  };
}

function pickWhole(probe: ProbeReport, want: Role): Picked | undefined {
  for (const v of [want, want === 'server' ? 'client' : 'server'] as const) {
    const figures = probe.views[v];
    if (figures?.requests) {
      return {
        figures,
        view: v,
        probeService: WHOLE_PROBE,
        fellBack: v !== want,
        meshProcessingMs: meshProcessing(probe),
      };
    }
  }
  return undefined;
}

/**
 * The real durations (ms) a mesh bucket holds. Istio records whole ms
 * (truncated), so its bucket (lo, hi] holds recorded values floor(lo)+1 ..
 * floor(hi), i.e. durations [floor(lo)+1, floor(hi)+1) ms; the first bucket
 * also holds 0, i.e. [0, floor(hi)+1). Hubble's (lo, hi] holds (lo, hi].
 */
export function realInterval(h: MeshHistogram, buckets: readonly Bucket[], index: number): [number, number] {
  const hi = buckets[index].le * h.toMs;
  const lo = index > 0 ? buckets[index - 1].le * h.toMs : 0;
  if (!truncates(h)) return [lo, hi];
  return [index > 0 ? Math.floor(lo) + 1 : 0, hi === Infinity ? Infinity : Math.floor(hi) + 1];
}

/** Istio's millisecond histogram holds durations truncated to whole ms. */
export function truncates(h: MeshHistogram): boolean {
  return h.source === 'istio' && h.toMs === 1;
}

/**
 * The kernel's raw histogram put in the mesh's buckets: each fine bucket
 * [lo, hi) spread evenly over its width and split across the real-duration
 * intervals of the mesh's buckets (after truncation for Istio). Cumulative,
 * in the mesh's unit, ready for histogram_quantile.
 */
export function rebin(fine: FineBuckets, h: MeshHistogram): Bucket[] {
  const { buckets } = normalizeBuckets(h.buckets);
  const edges = buckets.map((_, j) => realInterval(h, buckets, j));
  const counts = new Array<number>(buckets.length).fill(0);
  for (const [loNs, hiNs, c] of fine) {
    const lo = loNs / 1e6;
    const hi = hiNs / 1e6;
    if (!(c > 0)) continue;
    if (!Number.isFinite(hi) || hi > 1e12 || hi <= lo) {
      // the overflow bucket (or a point): whole, where its lower bound falls
      const j = edges.findIndex(([a, b]) => lo >= a && lo < b);
      counts[j < 0 ? counts.length - 1 : j] += c;
      continue;
    }
    for (let j = 0; j < edges.length; j++) {
      const [a, b] = edges[j];
      const overlap = Math.min(hi, b) - Math.max(lo, a);
      if (overlap > 0) counts[j] += (c * overlap) / (hi - lo);
    }
  }
  let cum = 0;
  return buckets.map((b, j) => ({ le: b.le, count: (cum += counts[j]) }));
}

/** Mean of d - floor(d) (ms) over the kernel's requests: what truncation to whole ms takes off a mean. */
export function truncationLoss(fine: FineBuckets): number | undefined {
  let n = 0;
  let loss = 0;
  for (const [loNs, hiNs, c] of fine) {
    if (!(c > 0)) continue;
    const lo = loNs / 1e6;
    const hi = hiNs / 1e6;
    let frac: number;
    if (!Number.isFinite(hi) || hi - lo > 50) frac = 0.5;
    else if (hi <= lo) frac = lo - Math.floor(lo);
    else {
      // integral of (x - floor x) over [lo, hi), per unit width
      let area = 0;
      for (let x = lo; x < hi;) {
        const next = Math.min(hi, Math.floor(x) + 1);
        const f0 = x - Math.floor(x);
        const f1 = f0 + (next - x);
        area += ((f0 + f1) / 2) * (next - x);
        x = next;
      }
      frac = area / (hi - lo);
    }
    loss += frac * c;
    n += c;
  }
  return n > 0 ? loss / n : undefined;
}

interface CauseCtx {
  h: MeshHistogram;
  p: Picked;
  service: string;
  meshRequests: number;
  kernelRequests: number;
  windowText: string;
}

function tooFew(who: string, n: number, q: number, qn: string): string | undefined {
  const tail = n * (1 - q);
  if (n > 0 && tail < 5) {
    return `${who} has only ${n} requests, too few for a steady ${qn} (it rests on the slowest ${Math.max(1, Math.ceil(tail - 1e-9))})`;
  }
  return undefined;
}

function fellBackText(c: CauseCtx): string | undefined {
  if (!c.p.fellBack) return undefined;
  const want = roleFor(c.h);
  return `the probe saw no ${want} side of ${c.p.probeService === WHOLE_PROBE ? 'the traffic' : c.p.probeService}, so ${label(c.h)} is compared with its ${c.p.view} view`;
}

function explainMore(c: CauseCtx): string {
  const { h } = c;
  const view = c.p.view;
  let s: string;
  if (h.source === 'istio' && h.reporter === 'destination' && view === 'server') {
    s =
      "the server's sidecar adds its own time (the inbound Envoy, and its hop to the app and back over loopback), which the app's sockets do not see";
  } else if (h.source === 'istio' && h.reporter === 'source' && view === 'server') {
    s =
      "reporter=source times from the client's sidecar, so both sidecars and the network between them are in it, and only the app's time in the kernel's server view";
  } else if (h.source === 'cilium' && h.reporter === 'server' && view === 'server') {
    s =
      "Cilium's proxy (Envoy, one per node) sits between the network and the pod, and its time is in Hubble's figure, not in the app's sockets";
  } else if (h.source === 'cilium' && h.reporter === 'client' && view === 'server') {
    s =
      "reporter=client times from the client node's proxy, so the network and the server side's proxy are in it, not in the app's server view";
  } else if (view === 'client') {
    // the proxy's timing is inside the client app's wait: more means other requests
    return "the proxy times a part of what the client app waits, so a mesh figure above the app's wait means the two cover different requests or time windows";
  } else {
    s = `the mesh's figure covers more than the kernel's ${view} view`;
  }
  if (c.p.meshProcessingMs !== undefined) {
    s += ` (the probe's overhead analysis puts the mesh at ${fmt(c.p.meshProcessingMs)} ms per request on average)`;
  }
  return s;
}

function explainLess(c: CauseCtx): string {
  if (c.p.view === 'client') {
    return "the client app's wait also covers its hops to and from its own proxy and the proxy's work outside its timer (taking the connection, reading the request)";
  }
  return "the app's time is inside the proxy's, so a kernel figure above the mesh's means the two cover different requests or time windows";
}

function quantileCause(
  c: CauseCtx,
  qn: QName,
  q: number,
  e: number | null,
  m: ReturnType<typeof meshQuantile>,
  expected: number | null | undefined,
): string {
  const parts: string[] = [];
  const fb = fellBackText(c);
  if (fb) parts.push(fb);
  const d = m.detail;
  if (m.ms === null) {
    parts.push(`${label(c.h)} gives no ${qn}: ${d.reason ?? 'histogram_quantile is NaN'}`);
    return sentence(parts);
  }
  if (e === null) {
    parts.push(`the probe has no ${qn} for ${c.p.probeService} (${c.p.view} view, ${c.kernelRequests} requests)`);
    return sentence(parts);
  }
  const istio = truncates(c.h);
  if (d.inInf) {
    const top = fmtBound(d.lower * c.h.toMs);
    parts.push(
      `the ${qn} falls above the mesh's highest finite bucket bound, ${top} ms, which Prometheus returns as it is: the mesh only says "more than ${top} ms"`,
    );
    if (e < d.lower * c.h.toMs) parts.push(`the kernel's ${fmt(e)} ms is below it, ${explainMore(c)}`);
  } else {
    const lo = d.index > 0 ? d.buckets[d.index - 1].le * c.h.toMs : 0;
    const hi = d.upper * c.h.toMs;
    const [a, b] = realInterval(c.h, d.buckets, d.index);
    const bucket = `(${fmtBound(lo)}, ${fmtBound(hi)}] ms`;
    const real = istio
      ? `, which holds durations of ${fmtBound(a)} to ${fmtBound(b)} ms before Istio truncates them to whole ms`
      : '';
    const inside = istio ? e >= a && e < b : d.index === 0 ? e >= 0 && e <= b : e > a && e <= b;
    if (inside) {
      parts.push(
        `resolution: the kernel's ${fmt(e)} ms lies in the bucket the mesh interpolated in, ${bucket}${real}, so the ${fmt(Math.abs(m.ms - e))} ms difference is within what the mesh can tell`,
      );
    } else if (e < a) {
      parts.push(
        `the mesh measured at least ${fmt(a - e)} ms more than the kernel (its ${qn} bucket ${bucket}${real} starts above the kernel's ${fmt(e)} ms): ${explainMore(c)}`,
      );
    } else {
      parts.push(
        `the kernel measured at least ${fmt(e - b)} ms more than the mesh (its ${qn} bucket ${bucket}${real} ends below the kernel's ${fmt(e)} ms): ${explainLess(c)}`,
      );
    }
    if (istio && e < 1 && d.index === 0)
      parts.push(
        `Istio truncates to whole ms, so a ${fmt(e)} ms request is recorded as 0 and counts in the first bucket (0, ${fmtBound(d.buckets[0].le * c.h.toMs)}]`,
      );
  }
  if (expected !== undefined && expected !== null) {
    parts.push(
      `the kernel's own requests in the mesh's buckets${istio ? ', truncated to whole ms,' : ''} would read ${fmt(expected)} ms: the buckets account for ${fmt(expected - e)} ms of the difference, the mesh's own data for the other ${fmt(m.ms - expected)} ms`,
    );
  }
  const few = tooFew('the mesh', c.meshRequests, q, qn) ?? tooFew('the probe', c.kernelRequests, q, qn);
  if (few) parts.push(few);
  const mismatch = countMismatch(c);
  if (mismatch) parts.push(mismatch);
  return sentence(parts);
}

function meanCause(c: CauseCtx, e: number | null, m: number | null, fine: FineBuckets | undefined): string {
  const parts: string[] = [];
  const fb = fellBackText(c);
  if (fb) parts.push(fb);
  if (m === null) {
    parts.push(`${label(c.h)} has no mean (no _sum and _count${c.h.count === 0 ? ' requests' : ''} in the input)`);
    return sentence(parts);
  }
  if (e === null) {
    parts.push(`the probe has no mean for ${c.p.probeService}`);
    return sentence(parts);
  }
  const d = m - e;
  let corrected = d;
  let tol = Math.max(0.02, 0.01 * Math.abs(e));
  let text = `means add up: mesh - kernel = ${fmt(d)} ms`;
  if (truncates(c.h)) {
    const loss = fine ? truncationLoss(fine) : undefined;
    if (loss !== undefined) {
      corrected = d + loss;
      text += `, ${fmt(corrected)} ms after adding back the ${fmt(loss)} ms that Istio's truncation to whole ms takes off the mean of the kernel's requests`;
    } else {
      corrected = d + 0.5;
      tol = 0.5;
      text += `; Istio's truncation to whole ms takes 0 to 1 ms off its mean (0.5 ms when fractions spread evenly), so about ${fmt(corrected)} ms`;
    }
  }
  if (corrected > tol) parts.push(`${text}: ${explainMore(c)}`);
  else if (corrected < -tol) parts.push(`${text}: ${explainLess(c)}`);
  else parts.push(`${text}: no difference the figures can show`);
  const mismatch = countMismatch(c);
  if (mismatch) parts.push(mismatch);
  return sentence(parts);
}

function countMismatch(c: CauseCtx): string | undefined {
  const { meshRequests: n, kernelRequests: k } = c;
  if (!(n > 0) || !(k > 0)) return undefined;
  const r = n / k;
  if (r >= 0.8 && r <= 1.25) return undefined;
  return `they count different requests (${fmtCount(n)} in the mesh, ${fmtCount(k)} in the kernel)${c.windowText}`;
}

function fmtCount(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function sentence(parts: string[]): string {
  const s = parts.join('; ');
  return s.charAt(0).toUpperCase() + s.slice(1) + '.';
}

function windowText(probe: ProbeReport, input: MeshInput, live?: { rangeS: number; time: Date }): string {
  const dur = probe.durationS !== undefined ? `${fmt(probe.durationS)} s` : 'an unknown time';
  if (input.ranged && live) return ` (the probe ran ${dur}; the Prometheus range was ${fmt(live.rangeS)} s)`;
  if (input.ranged) return ` (the probe ran ${dur}; the range query spans another window)`;
  return ` (a scrape counts since its proxy started, the probe only its ${dur})`;
}

function meshView(h: MeshHistogram, input: string): MeshView {
  const q: Record<string, number | null> = {};
  const qb: MeshView['quantile_buckets_ms'] = {};
  for (const [n, x] of QUANTILES) {
    const r = meshQuantile(h, x);
    q[n] = r.ms;
    if (r.ms !== null && r.detail.index >= 0) {
      const d = r.detail;
      const lo = d.inInf
        ? d.lower * h.toMs
        : d.index > 0
          ? d.buckets[d.index - 1].le * h.toMs
          : Math.min(0, d.upper * h.toMs);
      qb[n] = [clean(lo), d.inInf ? null : clean(d.upper * h.toMs)];
    }
  }
  const requests = requestsOf(h);
  const mean = h.sum !== null && h.count !== null && h.count > 0 ? (h.sum / h.count) * h.toMs : null;
  return {
    source: h.source,
    reporter: h.reporter,
    metric: h.metric,
    requests,
    p50_ms: q.p50,
    p90_ms: q.p90,
    p99_ms: q.p99,
    mean_ms: mean,
    bucket_bounds_ms: boundsMs(h).map(clean),
    ...(h.namespace ? { namespace: h.namespace } : {}),
    ...(h.aliases.length ? { aliases: h.aliases } : {}),
    quantile_buckets_ms: qb,
    input,
  };
}

const clean = (x: number) => Number(x.toPrecision(15));

function ebpfView(p: Picked): EbpfView {
  const f = p.figures;
  return {
    view: p.view,
    probe_service: p.probeService,
    requests: f.requests,
    ...(f.requests_estimated !== undefined ? { requests_estimated: f.requests_estimated } : {}),
    p50_ms: f.percentiles?.p50 ?? null,
    p90_ms: f.percentiles?.p90 ?? null,
    p99_ms: f.percentiles?.p99 ?? null,
    mean_ms: f.mean_ms,
  };
}

function differences(
  h: MeshHistogram,
  input: MeshInput,
  p: Picked,
  mv: MeshView,
  opts: AnalyzeOptions,
  service: string,
): Difference[] {
  const f = p.figures;
  const ctx: CauseCtx = {
    h,
    p,
    service,
    meshRequests: mv.requests,
    kernelRequests: f.requests_estimated ?? f.requests,
    windowText: windowText(opts.probe, input, opts.live),
  };
  const fine = f.buckets;
  const rebinned = fine ? rebin(fine, h) : undefined;
  const out: Difference[] = [];
  const common = { source: h.source, reporter: h.reporter, ebpf_view: p.view, probe_service: p.probeService };
  for (const [qn, q] of QUANTILES) {
    const e = f.percentiles?.[qn] ?? null;
    const m = meshQuantile(h, q);
    let expected: number | null | undefined;
    if (rebinned) {
      const v = quantileDetail(q, rebinned).value;
      expected = Number.isFinite(v) ? v * h.toMs : null;
    }
    out.push({
      ...common,
      quantile: qn,
      ebpf_ms: e,
      mesh_ms: m.ms,
      diff_ms: e !== null && m.ms !== null ? m.ms - e : null,
      likely_cause: quantileCause(ctx, qn, q, e, m, expected),
      ...(mv.quantile_buckets_ms?.[qn] ? { mesh_bucket_ms: mv.quantile_buckets_ms[qn] } : {}),
      ...(expected !== undefined ? { mesh_from_ebpf_ms: expected } : {}),
    });
  }
  const e = f.mean_ms;
  out.push({
    ...common,
    quantile: 'mean',
    ebpf_ms: e,
    mesh_ms: mv.mean_ms,
    diff_ms: e !== null && mv.mean_ms !== null ? mv.mean_ms - e : null,
    likely_cause: meanCause(ctx, e, mv.mean_ms, fine),
  });
  return out;
}

/** Builds the report: comparisons per service, and notes for what could not be paired. */
export function analyze(opts: AnalyzeOptions): AnalysisReport {
  const { probe } = opts;
  const map = new Map(
    [...(opts.serviceMap ?? new Map<string, string>())].map(([k, v]) => [k.toLowerCase(), v.toLowerCase()]),
  );
  const notes = [...(opts.notes ?? [])];
  const display = displayName(opts.mesh);
  const pairing = pairHistograms(opts, map, display);
  const services: ServiceComparison[] = [];
  let paired = 0;
  for (const c of pairing.comparisons.values()) {
    const compared = compareService(c, opts, display, notes);
    paired += compared.paired;
    services.push(compared.comparison);
  }
  notes.push(...pairingNotes(opts, map, pairing));
  if (paired === 0) throw nothingToCompare(opts);
  services.sort((a, b) => Number(b.ebpf.length > 0) - Number(a.ebpf.length > 0) || a.service.localeCompare(b.service));
  return {
    tool: 'analyze-latency',
    report_version: 1,
    generated_at: (opts.now ?? new Date()).toISOString(),
    inputs: opts.inputs,
    services,
    ...(probe.overhead ? { overhead_analysis: probe.overhead } : {}),
    notes,
    windows: {
      ...(probe.startedAt ? { ebpf_start: probe.startedAt.toISOString() } : {}),
      ...(probe.durationS !== undefined ? { ebpf_duration_s: probe.durationS } : {}),
      ...(opts.live ? { prometheus_range_s: opts.live.rangeS, prometheus_time: opts.live.time.toISOString() } : {}),
    },
  };
}

/** A mesh service's name as the report shows it: with its namespace when two namespaces have that name. */
function displayName(mesh: MeshInput[]): (h: MeshHistogram) => string {
  const nsOf = new Map<string, Set<string>>();
  for (const inp of mesh)
    for (const h of inp.histograms)
      if (h.name) {
        const s = nsOf.get(h.name) ?? new Set<string>();
        s.add(h.namespace ?? '');
        nsOf.set(h.name, s);
      }
  return (h) =>
    h.name && (nsOf.get(h.name)?.size ?? 0) > 1 && h.namespace ? `${h.name}.${h.namespace}` : (h.name ?? WHOLE_PROBE);
}

/** One comparison to make: mesh histograms and the probe services they match (or the whole probe). */
interface Pending {
  key: string;
  service: string;
  entries: ProbeService[];
  mesh: { h: MeshHistogram; input: MeshInput }[];
  whole: boolean;
}

/** The mesh histograms put with the probe services they name, and what was left over. */
interface Pairing {
  comparisons: Map<string, Pending>;
  /** mesh sources whose histograms name no service (compared with the whole probe) */
  wholeSources: Set<string>;
  /** histograms with no requests, left out */
  empty: string[];
  usedProbe: Set<ProbeService>;
  /** --service-map targets that matched */
  usedMap: Set<string>;
}

function pairHistograms(
  opts: AnalyzeOptions,
  map: ReadonlyMap<string, string>,
  display: (h: MeshHistogram) => string,
): Pairing {
  const { probe } = opts;
  const pairing: Pairing = {
    comparisons: new Map(),
    wholeSources: new Set(),
    empty: [],
    usedProbe: new Set(),
    usedMap: new Set(),
  };
  const get = (key: string, service: string, entries: ProbeService[], whole = false) => {
    let c = pairing.comparisons.get(key);
    if (!c) pairing.comparisons.set(key, (c = { key, service, entries, mesh: [], whole }));
    return c;
  };
  for (const inp of opts.mesh) {
    for (const h of inp.histograms) {
      if (requestsOf(h) === 0) {
        pairing.empty.push(`${label(h)} for ${h.name ? display(h) : 'all traffic'}`);
        continue;
      }
      if (!h.name) {
        get(WHOLE_PROBE, WHOLE_PROBE, [], true).mesh.push({ h, input: inp });
        pairing.wholeSources.add(`${h.source} (${inp.input})`);
        continue;
      }
      const entries = probe.services.filter((p) => matches(h, p, map));
      for (const p of entries) {
        pairing.usedProbe.add(p);
        const mapped = map.get(p.service.toLowerCase()) ?? map.get(p.name.toLowerCase());
        if (mapped !== undefined) pairing.usedMap.add(mapped);
      }
      if (entries.length === 0) {
        get(`mesh\u0000${h.name}\u0000${h.namespace ?? ''}`, display(h), []).mesh.push({ h, input: inp });
        continue;
      }
      const names = [...new Set(entries.map((p) => p.name))].sort();
      const key = `probe\u0000${names.join('\u0000')}`;
      const all = probe.services.filter((p) => names.includes(p.name));
      get(key, display(h), all).mesh.push({ h, input: inp });
    }
  }
  return pairing;
}

/** One service: each mesh histogram beside the probe's view it is compared with, and their differences. */
function compareService(
  c: Pending,
  opts: AnalyzeOptions,
  display: (h: MeshHistogram) => string,
  notes: string[],
): { comparison: ServiceComparison; paired: number } {
  const ebpf: EbpfView[] = [];
  const mesh: MeshView[] = [];
  const diffs: Difference[] = [];
  let paired = 0;
  for (const { h, input } of c.mesh) {
    const mv = meshView(h, input.input);
    mesh.push(mv);
    const p = c.whole ? pickWhole(opts.probe, roleFor(h)) : pick(c.entries, roleFor(h), opts.probe);
    if (!p) {
      if (!c.whole) {
        notes.push(
          `${label(h)} for ${display(h)} (${fmtCount(mv.requests)} requests) matches no probe service: name it with --services, or pair it with --service-map PROBE_SERVICE=${String(h.name)}`,
        );
      }
      continue;
    }
    paired++;
    const ev = ebpfView(p);
    if (!ebpf.some((x) => x.view === ev.view && x.probe_service === ev.probe_service)) ebpf.push(ev);
    diffs.push(...differences(h, input, p, mv, opts, c.service));
    const sameSide = c.entries.filter((x) => x.role === p.view);
    if (!c.whole && sameSide.length > 1) {
      notes.push(
        `${c.service}: several probe services of the ${p.view} side match it (${sameSide.map((x) => x.service).join(', ')}); ${p.probeService}, with the most requests, is compared`,
      );
    }
  }
  return { comparison: { service: c.service, ebpf, mesh, differences: diffs }, paired };
}

/** What could not be paired or counted: empty histograms, unnamed ones, unmatched probe services and --service-map entries. */
function pairingNotes(opts: AnalyzeOptions, map: ReadonlyMap<string, string>, pairing: Pairing): string[] {
  const { probe } = opts;
  const notes: string[] = [];
  if (pairing.empty.length) {
    notes.push(
      `no requests${opts.live ? ` in the ${fmt(opts.live.rangeS)} s range` : ''}, left out: ${pairing.empty.join(', ')}`,
    );
  }
  if (pairing.wholeSources.size) {
    notes.push(
      `${[...pairing.wholeSources].join(', ')}: the histograms name no destination (only labels like method and reporter), so they are compared with the probe's whole client and server views; Hubble's labelsContext=source_namespace,source_workload,destination_namespace,destination_workload gives per-service figures`,
    );
  }
  const unusedProbe = probe.services.filter((p) => !pairing.usedProbe.has(p) && p.requests > 0);
  if (unusedProbe.length) {
    notes.push(
      `no mesh figures for the probe services ${unusedProbe.map((p) => `${p.service} (${p.role})`).join(', ')}; pair one with --service-map ${unusedProbe[0].service}=MESH_SERVICE`,
    );
  }
  for (const [k, v] of map) {
    if (!pairing.usedMap.has(v)) {
      const known = probe.services.some((p) => p.service.toLowerCase() === k || p.name.toLowerCase() === k);
      notes.push(
        known
          ? `--service-map ${k}=${v}: no mesh histogram names the service ${v}`
          : `--service-map ${k}=${v}: the probe report has no service ${k}`,
      );
    }
  }
  for (const inp of opts.mesh) {
    for (const h of inp.histograms) {
      if (h.reporter === 'unknown')
        notes.push(
          `${inp.input}: ${h.source} series without a reporter label; compared as if reported by the server side`,
        );
    }
  }
  return notes;
}

/** No mesh figure could be put beside the probe's: what each side names, and how to pair them. */
function nothingToCompare(opts: AnalyzeOptions): Error {
  const { probe } = opts;
  const probeNames = [...new Set(probe.services.map((p) => p.service))];
  const meshNames = [
    ...new Set(opts.mesh.flatMap((i) => i.histograms.map((h) => h.name).filter((n): n is string => !!n))),
  ];
  const err = new Error(
    probe.services.length === 0 && !probe.views.client?.requests && !probe.views.server?.requests
      ? `nothing to compare: the probe report ${probe.file} has no requests`
      : `nothing to compare: no probe service matches a mesh service (probe: ${probeNames.slice(0, 6).join(', ') || 'none'}; mesh: ${meshNames.slice(0, 6).join(', ') || 'none'}); ` +
          `name them alike with --services, or pair them with --service-map ${probeNames[0] ?? 'PROBE_SERVICE'}=${meshNames[0] ?? 'MESH_SERVICE'}`,
  );
  return Object.assign(err, { code: 'MP_NOTHING_TO_COMPARE' });
}

/**
 * The mesh's latency histograms, per service and reporter, from scraped text
 * or Prometheus API results:
 *
 * - Istio: istio_request_duration_milliseconds (Envoy sidecars), reporter
 *   "source" (the client's sidecar) or "destination" (the server's). The
 *   service is named by the first of destination_service_name,
 *   destination_canonical_service, destination_workload, destination_app, the
 *   first part of destination_service (its FQDN) that is present and not
 *   "unknown"; the namespace by destination_service_namespace or
 *   destination_workload_namespace.
 * - Cilium/Hubble: hubble_http_request_duration_seconds, reporter "client" or
 *   "server". The service comes from the labels Hubble's context options add:
 *   destination_workload, destination_app (labelsContext), destination
 *   (destinationContext: "ns/pod", a workload or app name, ...), then
 *   destination_pod; the namespace from destination_namespace or the "ns/"
 *   of destination. With only method and reporter (the default) there is no
 *   service: such histograms stand for all the traffic the node's proxy saw.
 *
 * Series of one service and reporter are added bucket by bucket (by numeric
 * le), which is what `sum by (le, <service>, reporter)` then
 * histogram_quantile do: response codes, source workloads, methods, pods and
 * instances are summed away. _sum and _count are added the same way.
 */
import { parseExposition, type Sample } from './promtext.js';
import { parseApiResult } from './promapi.js';
import { parseGoFloat, quantileDetail, type Bucket, type QuantileDetail } from './quantile.js';

export type MeshSource = 'istio' | 'cilium';

export interface MetricDef {
  name: string;
  /** multiply a value in the metric's unit by this to get ms */
  toMs: number;
}

export const MESH_METRICS: Record<MeshSource, MetricDef[]> = {
  istio: [
    { name: 'istio_request_duration_milliseconds', toMs: 1 },
    // Istio < 1.5 (Mixer) reported seconds
    { name: 'istio_request_duration_seconds', toMs: 1000 },
  ],
  cilium: [{ name: 'hubble_http_request_duration_seconds', toMs: 1000 }],
};

/** Labels that name the destination service, in order of preference. */
export const SERVICE_LABELS: Record<MeshSource, string[]> = {
  istio: [
    'destination_service_name',
    'destination_canonical_service',
    'destination_workload',
    'destination_app',
    'destination_service',
  ],
  cilium: ['destination_workload', 'destination_app', 'destination', 'destination_pod'],
};

export const NAMESPACE_LABELS: Record<MeshSource, string[]> = {
  istio: ['destination_service_namespace', 'destination_workload_namespace', 'destination_canonical_service_namespace'],
  cilium: ['destination_namespace'],
};

export interface MeshHistogram {
  source: MeshSource;
  metric: string;
  /** source | destination (Istio), client | server (Hubble), "unknown" when the label is missing */
  reporter: string;
  /** the service name, null when the labels name no destination (Hubble's default labels) */
  name: string | null;
  namespace: string | null;
  /** every name the series' labels give the service (for matching, lower case) */
  aliases: string[];
  /** cumulative buckets in the metric's own unit, summed over the merged series */
  buckets: Bucket[];
  /** unit of `buckets` and `sum` -> ms */
  toMs: number;
  /** _sum and _count added over the merged series; null when absent */
  sum: number | null;
  count: number | null;
  /** bucket series merged (one per le per original series) */
  series: number;
  /** le values that were not numbers (left out, as Prometheus skips them) */
  badLe: number;
}

export interface MeshSet {
  histograms: MeshHistogram[];
  notes: string[];
  /** counts over a range (an API matrix) rather than totals since the proxies started */
  ranged: boolean;
}

/** The service identity of a series. */
export function serviceOf(
  source: MeshSource,
  labels: Record<string, string>,
): { name: string | null; namespace: string | null; aliases: string[] } {
  const usable = (v: string | undefined): v is string => !!v && v.toLowerCase() !== 'unknown';
  let namespace: string | null = null;
  for (const l of NAMESPACE_LABELS[source]) {
    if (usable(labels[l])) {
      namespace = labels[l];
      break;
    }
  }
  const aliases = new Set<string>();
  let name: string | null = null;
  for (const l of SERVICE_LABELS[source]) {
    let v = labels[l];
    if (!usable(v)) continue;
    aliases.add(v.toLowerCase());
    if (source === 'istio' && l === 'destination_service') {
      // reviews.bookinfo.svc.cluster.local -> reviews (and reviews.bookinfo)
      const parts = v.split('.');
      if (parts.length > 1) {
        aliases.add(parts[0].toLowerCase());
        aliases.add(`${parts[0]}.${parts[1]}`.toLowerCase());
        if (!namespace && parts.length >= 3 && parts[2] === 'svc') namespace = parts[1];
        v = parts[0];
      }
    }
    if (source === 'cilium' && l === 'destination' && v.includes('/')) {
      // destinationContext=pod|pod-short|...: "namespace/name"
      const [ns, rest] = [v.slice(0, v.indexOf('/')), v.slice(v.indexOf('/') + 1)];
      if (!namespace && ns) namespace = ns;
      if (rest) aliases.add(rest.toLowerCase());
      v = rest || v;
    }
    name ??= v;
  }
  if (name && namespace) {
    for (const a of [...aliases]) if (!a.includes('.')) aliases.add(`${a}.${namespace.toLowerCase()}`);
  }
  return { name, namespace, aliases: [...aliases].sort() };
}

function findMetric(samples: readonly Sample[], source: MeshSource): MetricDef | undefined {
  const names = new Set(samples.map((s) => s.name));
  return MESH_METRICS[source].find((d) => names.has(`${d.name}_bucket`));
}

/**
 * Groups the samples of `source`'s duration histogram by (reporter, service).
 * `anonymous`: samples without a metric name (API results of sum by (...))
 * are taken as that source's: series with le are its buckets.
 */
export function meshHistograms(
  samples: readonly Sample[],
  source: MeshSource,
  opts: { anonymous?: boolean; metric?: MetricDef } = {},
): MeshHistogram[] {
  const def = opts.metric ?? findMetric(samples, source) ?? (opts.anonymous ? MESH_METRICS[source][0] : undefined);
  if (!def) return [];
  const bucketName = `${def.name}_bucket`;
  const groups = new Map<string, MeshHistogram & { byLe: Map<number, number> }>();
  const groupOf = (labels: Record<string, string>) => {
    const { reporter = 'unknown' } = labels;
    const id = serviceOf(source, labels);
    const key = JSON.stringify([reporter, id.name, id.namespace]);
    let g = groups.get(key);
    if (!g) {
      g = {
        source,
        metric: def.name,
        reporter,
        name: id.name,
        namespace: id.namespace,
        aliases: [],
        buckets: [],
        toMs: def.toMs,
        sum: null,
        count: null,
        series: 0,
        badLe: 0,
        byLe: new Map(),
      };
      groups.set(key, g);
    }
    for (const a of id.aliases) if (!g.aliases.includes(a)) g.aliases.push(a);
    return g;
  };
  for (const s of samples) {
    const anon = s.name === '' && opts.anonymous;
    if (s.name === bucketName || (anon && 'le' in s.labels)) {
      const g = groupOf(s.labels);
      const le = 'le' in s.labels ? parseGoFloat(s.labels.le) : undefined;
      if (le === undefined || Number.isNaN(le)) {
        g.badLe++;
        continue;
      }
      g.byLe.set(le, (g.byLe.get(le) ?? 0) + s.value);
      g.series++;
    } else if (s.name === `${def.name}_sum`) {
      const g = groupOf(s.labels);
      g.sum = (g.sum ?? 0) + s.value;
    } else if (s.name === `${def.name}_count`) {
      const g = groupOf(s.labels);
      g.count = (g.count ?? 0) + s.value;
    }
  }
  return [...groups.values()]
    .filter((g) => g.byLe.size > 0 || g.badLe > 0)
    .map(({ byLe, ...g }) => ({
      ...g,
      aliases: g.aliases.sort(),
      buckets: [...byLe.entries()].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le),
    }))
    .sort(
      (a, b) =>
        (a.name ?? '').localeCompare(b.name ?? '') ||
        (a.namespace ?? '').localeCompare(b.namespace ?? '') ||
        a.reporter.localeCompare(b.reporter),
    );
}

/** Requests a histogram covers: its +Inf bucket (the highest count after Prometheus's monotonic fix). */
export function requestsOf(h: MeshHistogram): number {
  const inf = h.buckets.find((b) => b.le === Infinity);
  if (inf) return Math.max(inf.count, ...h.buckets.map((b) => b.count));
  return h.count ?? 0;
}

/** histogram_quantile(q) of the histogram, in ms (null when Prometheus would give NaN). */
export function meshQuantile(h: MeshHistogram, q: number): { ms: number | null; detail: QuantileDetail } {
  const detail = quantileDetail(q, h.buckets);
  return { ms: Number.isFinite(detail.value) ? detail.value * h.toMs : null, detail };
}

/** The finite upper bounds, in ms. */
export function boundsMs(h: MeshHistogram): number[] {
  return h.buckets.filter((b) => Number.isFinite(b.le)).map((b) => b.le * h.toMs);
}

/**
 * Mesh histograms of one input: Prometheus text/OpenMetrics or API JSON,
 * told apart by the first non-blank character. `file` names it in errors.
 */
export function readMeshText(text: string, source: MeshSource, file: string): MeshSet {
  const notes: string[] = [];
  const trimmed = text.trimStart();
  if (trimmed === '') throw new MeshInputError(`${file} is empty`);
  let samples: Sample[];
  let anonymous = false;
  let ranged = false;
  if (trimmed.startsWith('{') || trimmed.startsWith('[')) {
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch (e) {
      throw new MeshInputError(`${file} is not valid JSON: ${(e as Error).message}`);
    }
    let api;
    try {
      api = parseApiResult(doc);
    } catch (e) {
      throw new MeshInputError(`${file} is not a Prometheus API result: ${(e as Error).message}`);
    }
    samples = api.samples;
    anonymous = true;
    if (api.resultType === 'matrix') {
      ranged = true;
      const span = api.span ? ` over ${Math.round(api.span[1] - api.span[0])} s` : '';
      notes.push(
        `${file}: a range query (matrix); each series counts its increase from the first to the last sample${span}, counter resets corrected${api.resets ? ` (${api.resets} series had a reset)` : ''}, nothing extrapolated`,
      );
      if (api.singleSample) notes.push(`${file}: ${api.singleSample} series had a single sample and add nothing`);
    }
  } else {
    try {
      samples = parseExposition(text).samples;
    } catch (e) {
      const err = e as Error & { line?: number };
      throw new MeshInputError(`${file} line ${err.line ?? '?'}: ${err.message}`);
    }
    // the same series twice: several proxies' scrapes in one file (their counts add up)
    const seen = new Set<string>();
    let dup = 0;
    for (const s of samples) {
      if (!MESH_METRICS[source].some((d) => s.name.startsWith(d.name))) continue;
      const k = s.name + JSON.stringify(Object.entries(s.labels).sort());
      if (seen.has(k)) dup++;
      else seen.add(k);
    }
    if (dup)
      notes.push(
        `${file}: ${dup} samples repeat a series already read (scrapes of several proxies in one file?); their counts were added up`,
      );
  }
  const other: MeshSource = source === 'istio' ? 'cilium' : 'istio';
  const histograms = meshHistograms(samples, source, { anonymous });
  if (histograms.length === 0) {
    const names = MESH_METRICS[source].map((d) => d.name).join(' or ');
    if (findMetric(samples, other)) {
      throw new MeshInputError(
        `${file} has ${MESH_METRICS[other][0].name}, not ${names}: pass it with --${other}-metrics`,
      );
    }
    throw new MeshInputError(`no ${names} histogram (_bucket series with le) in ${file}`);
  }
  if (anonymous && samples.some((s) => s.name !== '' && !s.name.startsWith(histograms[0].metric))) {
    notes.push(`${file}: series of other metrics were ignored`);
  }
  const bad = histograms.reduce((a, h) => a + h.badLe, 0);
  if (bad)
    notes.push(`${file}: ${bad} bucket samples had an le that is not a number and were left out (as Prometheus does)`);
  const fractional = histograms.some((h) => h.buckets.some((b) => !Number.isInteger(b.count)));
  if (fractional && !anonymous) notes.push(`${file}: bucket counts are not whole numbers`);
  return { histograms, notes, ranged };
}

export class MeshInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MeshInputError';
  }
}

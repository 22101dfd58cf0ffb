/**
 * --prometheus-url: the mesh's histograms from a live Prometheus, through
 * /api/v1/query (instant queries at one evaluation time):
 *
 *   sum by (le, reporter, <service labels>) (increase(<metric>_bucket[RANGE]))
 *   sum by (reporter, <service labels>) (increase(<metric>_sum[RANGE]))   (and _count)
 *
 * for istio_request_duration_milliseconds and
 * hubble_http_request_duration_seconds. increase() is Prometheus's own
 * (extrapolated to the range's edges); histogram_quantile does not depend on
 * that scale. The result is read like a saved API file (src/analyze/promapi.ts).
 */
import { usageError } from '../errors.js';
import { jsonText, parseApiResult } from './promapi.js';
import {
  MESH_METRICS,
  NAMESPACE_LABELS,
  SERVICE_LABELS,
  meshHistograms,
  type MeshHistogram,
  type MeshSource,
} from './mesh.js';
import type { Sample } from './promtext.js';

export interface LiveOptions {
  url: string;
  rangeS: number;
  time: Date;
  timeoutMs?: number;
}

export interface LiveResult {
  source: MeshSource;
  histograms: MeshHistogram[];
  queries: string[];
}

/** A Prometheus range selector duration: whole seconds ("300s"); ms when below a second. */
export function promDuration(s: number): string {
  if (s >= 1 && Number.isInteger(s)) return `${s}s`;
  return `${Math.max(1, Math.round(s * 1000))}ms`;
}

export function queriesFor(source: MeshSource, rangeS: number): { buckets: string; sum: string; count: string } {
  const metric = MESH_METRICS[source][0].name;
  const by = ['reporter', ...SERVICE_LABELS[source], ...NAMESPACE_LABELS[source]].join(', ');
  const r = promDuration(rangeS);
  return {
    buckets: `sum by (le, ${by}) (increase(${metric}_bucket[${r}]))`,
    sum: `sum by (${by}) (increase(${metric}_sum[${r}]))`,
    count: `sum by (${by}) (increase(${metric}_count[${r}]))`,
  };
}

/** The request URL of an instant query, and credentials from the URL's user:password, if any. */
function endpoint(base: string, query: string, time: Date): { url: string; headers: Record<string, string> } {
  let u: URL;
  try {
    u = new URL(base);
  } catch {
    throw usageError(`invalid --prometheus-url "${base}": use http://host:9090`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw usageError(`invalid --prometheus-url "${base}": use an http:// or https:// URL`);
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (u.username || u.password) {
    headers.Authorization =
      'Basic ' + Buffer.from(`${decodeURIComponent(u.username)}:${decodeURIComponent(u.password)}`).toString('base64');
    u.username = '';
    u.password = '';
  }
  u.pathname = u.pathname.replace(/\/+$/, '') + '/api/v1/query';
  u.search = new URLSearchParams({ query, time: (time.getTime() / 1000).toFixed(3) }).toString();
  return { url: u.toString(), headers };
}

export async function instantQuery(opts: LiveOptions, query: string): Promise<Sample[]> {
  const { url, headers } = endpoint(opts.url, query, opts.time);
  const shown = opts.url.replace(/\/\/[^@/]*@/, '//');
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: AbortSignal.timeout(opts.timeoutMs ?? 15_000) });
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    const why =
      err.name === 'TimeoutError'
        ? `no answer in ${(opts.timeoutMs ?? 15_000) / 1000} s`
        : (err.cause?.code ?? err.cause?.message ?? err.message);
    throw usageError(`cannot reach Prometheus at ${shown} (${why}): check --prometheus-url`);
  }
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw usageError(
      `${shown} answered HTTP ${res.status} with something that is not a Prometheus API response (${JSON.stringify(text.slice(0, 60))}): is it Prometheus's base URL?`,
    );
  }
  const b = body as { status?: unknown; errorType?: unknown; error?: unknown };
  if (b.status !== 'success') {
    throw usageError(
      `Prometheus at ${shown} answered HTTP ${res.status}, ${jsonText(b.errorType ?? b.status ?? 'error')}: ${jsonText(b.error ?? 'no error message')} (query: ${query})`,
    );
  }
  try {
    return parseApiResult(body).samples;
  } catch (e) {
    throw usageError(
      `Prometheus at ${shown} answered with an unexpected result: ${(e as Error).message} (query: ${query})`,
    );
  }
}

/** Both sources' histograms; a source with no data at all gives an empty list. */
export async function queryMesh(opts: LiveOptions, sources: readonly MeshSource[]): Promise<LiveResult[]> {
  const out: LiveResult[] = [];
  for (const source of sources) {
    const q = queriesFor(source, opts.rangeS);
    const def = MESH_METRICS[source][0];
    const [buckets, sum, count] = await Promise.all([
      instantQuery(opts, q.buckets),
      instantQuery(opts, q.sum),
      instantQuery(opts, q.count),
    ]);
    const samples: Sample[] = [
      ...buckets.map((s) => ({ ...s, name: `${def.name}_bucket` })),
      ...sum.map((s) => ({ ...s, name: `${def.name}_sum` })),
      ...count.map((s) => ({ ...s, name: `${def.name}_count` })),
    ];
    out.push({
      source,
      histograms: meshHistograms(samples, source, { metric: def }),
      queries: [q.buckets, q.sum, q.count],
    });
  }
  return out;
}

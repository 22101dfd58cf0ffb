/**
 * Prometheus HTTP API results (/api/v1/query and /api/v1/query_range) read
 * as samples, from a saved file or from a live server.
 *
 * A file may hold the whole response (`{"status":"success","data":{...}}`),
 * only its `data` (`{"resultType":..., "result":[...]}`), or only the result
 * array; vector or matrix is told from resultType, or from the entries
 * (`value` or `values`).
 *
 * A matrix (query_range) becomes one value per series: the series' increase
 * from its first to its last sample. A drop between two samples is a counter
 * reset (the process restarted): the value after the drop is what was counted
 * since the reset, so it is added whole, as Prometheus's rate() and increase()
 * correct resets. Unlike increase(), nothing is extrapolated to the edges of
 * the range: the result is what the samples show, no more. A series with one
 * sample adds nothing (it has no increase to show). Histogram quantiles do not
 * depend on that scale anyway, only on the buckets' proportions.
 */
import { parseGoFloat } from './quantile.js';
import type { Sample } from './promtext.js';

export interface ApiResult {
  samples: Sample[];
  resultType: 'vector' | 'matrix';
  /** matrix: series whose samples went down at least once (counter resets corrected) */
  resets: number;
  /** matrix: series with a single sample (no increase) */
  singleSample: number;
  /** matrix: first and last sample times over all series (unix seconds) */
  span?: [number, number];
  /** vector: the evaluation time of the samples (unix seconds), when all agree */
  time?: number;
}

export class ApiFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ApiFormatError';
  }
}

function value(v: unknown, where: string): number {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') throw new ApiFormatError(`${where}: value ${JSON.stringify(v)} is not a string`);
  const x = parseGoFloat(v);
  if (x === undefined) throw new ApiFormatError(`${where}: value "${v}" is not a number`);
  return x;
}

function pair(p: unknown, where: string): [number, number] {
  if (!Array.isArray(p) || p.length !== 2) throw new ApiFormatError(`${where}: expected [time, "value"]`);
  const t = typeof p[0] === 'number' ? p[0] : Number(p[0]);
  if (!Number.isFinite(t)) throw new ApiFormatError(`${where}: time ${JSON.stringify(p[0])} is not a number`);
  return [t, value(p[1], where)];
}

function labelsOf(m: unknown, where: string): Record<string, string> {
  if (m === undefined || m === null) return {};
  if (typeof m !== 'object' || Array.isArray(m))
    throw new ApiFormatError(`${where}: "metric" must be an object of labels`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m as Record<string, unknown>)) {
    if (typeof v !== 'string') throw new ApiFormatError(`${where}: label ${k} is not a string`);
    if (v !== '') out[k] = v;
  }
  return out;
}

/** A value from a JSON response as a message shows it: a string as it is, anything else as JSON. */
export function jsonText(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** Reads a parsed API response (or its data, or its result array). */
export function parseApiResult(doc: unknown): ApiResult {
  const { resultType, result } = seriesOf(doc);
  const samples: Sample[] = [];
  let resets = 0;
  let singleSample = 0;
  let lo = Infinity;
  let hi = -Infinity;
  const times = new Set<number>();
  result.forEach((entry, idx) => {
    const where = `result[${idx}]`;
    if (!entry || typeof entry !== 'object') throw new ApiFormatError(`${where} is not an object`);
    const e = entry as {
      metric?: unknown;
      value?: unknown;
      values?: unknown;
      histogram?: unknown;
      histograms?: unknown;
    };
    const { __name__: name = '', ...labels } = labelsOf(e.metric, where);
    if (resultType === 'vector') {
      if (e.value === undefined) {
        if (e.histogram !== undefined)
          throw new ApiFormatError(`${where} is a native histogram: only classic (le-bucketed) histograms are read`);
        throw new ApiFormatError(`${where} has no "value"`);
      }
      const [t, v] = pair(e.value, where);
      times.add(t);
      samples.push({ name, labels, value: v, timestamp: t, line: idx + 1 });
    } else {
      if (!Array.isArray(e.values)) {
        if (e.histograms !== undefined)
          throw new ApiFormatError(`${where} is a native histogram: only classic (le-bucketed) histograms are read`);
        throw new ApiFormatError(`${where} has no "values"`);
      }
      const pts = (e.values as unknown[]).map((p, j) => pair(p, `${where}.values[${j}]`));
      pts.sort((a, b) => a[0] - b[0]);
      if (pts.length === 0) return;
      lo = Math.min(lo, pts[0][0]);
      hi = Math.max(hi, pts[pts.length - 1][0]);
      if (pts.length === 1) singleSample++;
      const { increase, reset } = counterIncrease(pts.map((p) => p[1]));
      if (reset) resets++;
      samples.push({ name, labels, value: increase, timestamp: pts[pts.length - 1][0], line: idx + 1 });
    }
  });
  return {
    samples,
    resultType,
    resets,
    singleSample,
    ...(resultType === 'matrix' && Number.isFinite(lo) ? { span: [lo, hi] as [number, number] } : {}),
    ...(resultType === 'vector' && times.size === 1 ? { time: [...times][0] } : {}),
  };
}

/** The series of a response: its result array, and whether it is an instant vector or a range matrix. */
function seriesOf(doc: unknown): { resultType: 'vector' | 'matrix'; result: unknown[] } {
  let data: unknown = doc;
  if (data && typeof data === 'object' && !Array.isArray(data) && 'status' in data) {
    const d = data as { status: unknown; error?: unknown; errorType?: unknown; data?: unknown };
    if (d.status !== 'success') {
      throw new ApiFormatError(
        `the response says status "${jsonText(d.status)}"${d.error ? `: ${jsonText(d.errorType ?? '')} ${jsonText(d.error)}`.trimEnd() : ''}`,
      );
    }
    data = d.data;
  } else if (data && typeof data === 'object' && !Array.isArray(data) && !('result' in data) && 'data' in data) {
    data = data.data;
  }
  let resultType: string | undefined;
  let result: unknown = data;
  if (data && typeof data === 'object' && !Array.isArray(data)) {
    const d = data as { resultType?: unknown; result?: unknown };
    if (!('result' in d)) throw new ApiFormatError('no "result" in the response data');
    resultType = typeof d.resultType === 'string' ? d.resultType : undefined;
    result = d.result;
  }
  if (!Array.isArray(result)) {
    if (resultType === 'scalar' || resultType === 'string')
      throw new ApiFormatError(`the result is a ${resultType}, not a vector or matrix of histogram buckets`);
    throw new ApiFormatError('the result is not an array of series');
  }
  if (!resultType) {
    const first = result[0] as Record<string, unknown> | undefined;
    resultType = first && 'values' in first ? 'matrix' : 'vector';
  }
  if (resultType !== 'vector' && resultType !== 'matrix')
    throw new ApiFormatError(`resultType "${resultType}" is not vector or matrix`);
  return { resultType, result };
}

/** last - first, plus the value before every drop (a reset), as Prometheus corrects counter resets; no extrapolation. */
export function counterIncrease(values: readonly number[]): { increase: number; reset: boolean } {
  if (values.length < 2) return { increase: 0, reset: false };
  let result = values[values.length - 1] - values[0];
  let reset = false;
  for (let i = 1; i < values.length; i++) {
    if (values[i] < values[i - 1]) {
      result += values[i - 1];
      reset = true;
    }
  }
  return { increase: result, reset };
}

/**
 * From what the reports keep of a latency distribution to what the charts
 * draw. A view (client, server, network) carries `buckets`: every non-empty
 * bucket of the probe's histogram as [lower_ns, upper_ns, count], 64 buckets
 * per power of two (each at most 1/64 = 1.6 % wide, exact below 128 ns). Its
 * CDF is exact at every bucket edge, and histograms re-binned from it are
 * exact up to one bucket at each bin edge. A service carries only its
 * percentiles (p50 ... p99.9) and counts in the report's six ranges (0-1 ms,
 * 1-5 ms, ...): its CDF is known at those six quantiles, no more.
 */
import { arr, num, QUANTILE_NAMES, QUANTILE_Q, type Quantiles } from './read.js';
import type { LinePoint } from './charts/line.js';
import type { Bin } from './charts/histogram.js';

/** [lower_ms, upper_ms, count], upper clamped to the largest value seen (the overflow bucket's bound is 2^64 ns). */
export type MsBucket = [number, number, number];

/** A report's bucket list in ms; malformed rows are skipped. */
export function bucketsMs(v: unknown, maxMs?: number | null): MsBucket[] {
  const out: MsBucket[] = [];
  for (const row of arr(v)) {
    const r = arr(row);
    const lo = num(r[0]),
      hi = num(r[1]),
      c = num(r[2]);
    if (lo === null || hi === null || c === null || c <= 0 || hi < lo) continue;
    let upper = hi / 1e6;
    if (maxMs !== null && maxMs !== undefined && maxMs > 0 && upper > maxMs && lo / 1e6 <= maxMs)
      upper = Math.max(lo / 1e6, maxMs);
    out.push([lo / 1e6, upper, c]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}

/**
 * The CDF through every bucket edge: (lower of the first bucket, 0), then
 * (upper of each bucket, share of requests below it). Within a bucket the
 * line is straight, i.e. values spread evenly inside it.
 */
export function cdfFromBuckets(buckets: readonly MsBucket[]): LinePoint[] {
  const total = buckets.reduce((a, b) => a + b[2], 0);
  if (total <= 0) return [];
  const pts: LinePoint[] = [{ x: Math.max(buckets[0][0], 1e-6), y: 0 }];
  let cum = 0;
  for (const [lo, hi, c] of buckets) {
    const last = pts[pts.length - 1];
    if (lo > last.x * (1 + 1e-9)) pts.push({ x: lo, y: cum / total }); // a gap: flat until this bucket
    cum += c;
    pts.push({ x: hi, y: cum / total });
  }
  return pts;
}

/** Quantile points of a percentiles object: (value, q) in ascending q. */
export function quantilePoints(q: Quantiles | null): LinePoint[] {
  if (!q) return [];
  return QUANTILE_NAMES.flatMap((n) => {
    const x = q[n];
    return typeof x === 'number' ? [{ x, y: QUANTILE_Q[n] }] : [];
  });
}

/**
 * Fine buckets re-binned into `perDecade` equal bins per decade of a log
 * axis; each bucket goes whole to the bin holding its geometric midpoint.
 */
export function rebinLog(buckets: readonly MsBucket[], perDecade = 10): Bin[] {
  const bins = new Map<number, number>();
  for (const [lo, hi, c] of buckets) {
    const mid = lo > 0 ? Math.sqrt(lo * hi) : hi / 2;
    if (!(mid > 0)) continue;
    const k = Math.floor(Math.log10(mid) * perDecade + 1e-9);
    bins.set(k, (bins.get(k) ?? 0) + c);
  }
  return [...bins.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([k, c]) => ({ lo: 10 ** (k / perDecade), hi: 10 ** ((k + 1) / perDecade), count: c }));
}

/** Requests in a bucket list. */
export function totalOf(buckets: readonly MsBucket[]): number {
  return buckets.reduce((a, b) => a + b[2], 0);
}

/** The report's six latency ranges, in their order. */
export const RANGE_LABELS = ['0-1ms', '1-5ms', '5-10ms', '10-50ms', '50-100ms', '100ms+'] as const;

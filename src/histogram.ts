/**
 * Histogram snapshots (plain JS objects) of the decoder's log-linear
 * histograms: 64 sub-buckets per power of two over u64 nanoseconds, values
 * < 128 ns exact, one overflow bucket for >= 2^36 ns (~68.7 s).
 *
 * The bucket math exists once, in the Wasm module (assembly/index.ts:
 * bucketIndex/bucketLower/bucketUpper); this file asks it for the bounds
 * (a table of NB+1 lower bounds built at first use).
 */
import { wasmExports, wasmConst } from './wasm.js';

export interface HistogramSnapshot {
  count: number;
  sum_ns: number;
  /** 0 when count is 0 */
  min_ns: number;
  /** 0 when count is 0 */
  max_ns: number;
  /** sparse [bucket index, count], ascending index, counts > 0 */
  buckets: [number, number][];
}

/** [lower_ns, upper_ns (exclusive), count]; the overflow bucket's upper is 2^64-1 (as a JS number: 2^64). */
export type BucketList = [number, number, number][];

let lowers: Float64Array | undefined; // NB + 1 entries: lower bound of each bucket, then +inf
let nb = 0;

function table(): Float64Array {
  if (!lowers) {
    const ex = wasmExports();
    nb = wasmConst('HIST_NB');
    const t = new Float64Array(nb + 1);
    for (let i = 0; i < nb; i++) t[i] = Number(ex.bucketLower(i));
    t[nb] = Infinity;
    lowers = t;
  }
  return lowers;
}

/** Number of buckets (1985). */
export function bucketCount(): number {
  table();
  return nb;
}

/** Index of the overflow bucket (values >= 2^36 ns). */
export function overflowIndex(): number {
  return bucketCount() - 1;
}

/** Bucket of a value in ns (negative → 0, fractions truncated). */
export function bucketIndex(ns: number | bigint): number {
  let v: bigint;
  if (typeof ns === 'bigint') v = ns < 0n ? 0n : ns;
  else v = ns > 0 && Number.isFinite(ns) ? BigInt(Math.floor(ns)) : ns === Infinity ? 0xffffffffffffffffn : 0n;
  if (v > 0xffffffffffffffffn) v = 0xffffffffffffffffn;
  return wasmExports().bucketIndex(v) >>> 0;
}

/** Inclusive lower bound of bucket idx, in ns. */
export function bucketLower(idx: number): number {
  return table()[idx];
}

/** Exclusive upper bound of bucket idx, in ns (2^64 for the overflow bucket). */
export function bucketUpper(idx: number): number {
  const t = table();
  return idx + 1 < nb ? t[idx + 1] : Number(BigInt.asUintN(64, wasmExports().bucketUpper(idx)));
}

/** Exact bounds as BigInt, straight from the Wasm module. */
export function bucketBoundsBig(idx: number): [bigint, bigint] {
  const ex = wasmExports();
  return [BigInt.asUintN(64, ex.bucketLower(idx)), BigInt.asUintN(64, ex.bucketUpper(idx))];
}

/**
 * Representative value of a bucket: the midpoint of the integers it holds,
 * (lower + upper - 1) / 2 (exact for the 1-ns buckets below 128 ns; within
 * 1/128 of any member otherwise). Infinity for the overflow bucket.
 */
export function bucketMid(idx: number): number {
  const t = table();
  if (idx >= nb - 1) return Infinity;
  return (t[idx] + t[idx + 1] - 1) / 2;
}

export function emptyHistogram(): HistogramSnapshot {
  return { count: 0, sum_ns: 0, min_ns: 0, max_ns: 0, buckets: [] };
}

/** A snapshot of the given values (ns), with the same bucket math as the decoder. */
export function histogramOf(values: Iterable<number | bigint>): HistogramSnapshot {
  const counts = new Map<number, number>();
  let count = 0,
    sum = 0,
    min = Infinity,
    max = -Infinity;
  for (const x of values) {
    const v = Number(x);
    const i = bucketIndex(x);
    counts.set(i, (counts.get(i) ?? 0) + 1);
    count++;
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (count === 0) return emptyHistogram();
  const buckets = [...counts.entries()].sort((a, b) => a[0] - b[0]);
  return { count, sum_ns: sum, min_ns: min, max_ns: max, buckets };
}

/**
 * Nearest-rank percentile, q in [0, 1]: target = max(1, ceil(q*count)); the
 * answer is the midpoint of the bucket holding the target-th value, clamped to
 * [min_ns, max_ns]. 0 for an empty histogram.
 */
export function percentile(h: HistogramSnapshot, q: number): number {
  if (h.count <= 0 || h.buckets.length === 0) return 0;
  const qq = Math.min(1, Math.max(0, q));
  const target = Math.max(1, Math.ceil(qq * h.count));
  let cum = 0;
  let idx = h.buckets[h.buckets.length - 1][0];
  for (const [i, c] of h.buckets) {
    cum += c;
    if (cum >= target) {
      idx = i;
      break;
    }
  }
  const mid = bucketMid(idx);
  return Math.min(Math.max(mid, h.min_ns), h.max_ns);
}

export function percentiles(h: HistogramSnapshot, qs: readonly number[]): number[] {
  return qs.map((q) => percentile(h, q));
}

export function mean(h: HistogramSnapshot): number {
  return h.count > 0 ? h.sum_ns / h.count : 0;
}

/** a + b (neither is modified). */
export function merge(a: HistogramSnapshot, b: HistogramSnapshot): HistogramSnapshot {
  if (a.count === 0) return { ...b, buckets: b.buckets.map(([i, c]) => [i, c] as [number, number]) };
  if (b.count === 0) return { ...a, buckets: a.buckets.map(([i, c]) => [i, c] as [number, number]) };
  const out: [number, number][] = [];
  let i = 0,
    j = 0;
  const A = a.buckets,
    B = b.buckets;
  while (i < A.length || j < B.length) {
    if (j >= B.length || (i < A.length && A[i][0] < B[j][0])) out.push([A[i][0], A[i++][1]]);
    else if (i >= A.length || B[j][0] < A[i][0]) out.push([B[j][0], B[j++][1]]);
    else {
      out.push([A[i][0], A[i][1] + B[j][1]]);
      i++;
      j++;
    }
  }
  return {
    count: a.count + b.count,
    sum_ns: a.sum_ns + b.sum_ns,
    min_ns: Math.min(a.min_ns, b.min_ns),
    max_ns: Math.max(a.max_ns, b.max_ns),
    buckets: out,
  };
}

export function mergeAll(hs: Iterable<HistogramSnapshot>): HistogramSnapshot {
  let acc = emptyHistogram();
  for (const h of hs) acc = merge(acc, h);
  return acc;
}

/** The report's latency bins, [label, lower_ns, upper_ns). */
export const RANGE_BINS: readonly (readonly [string, number, number])[] = [
  ['0-1ms', 0, 1e6],
  ['1-5ms', 1e6, 5e6],
  ['5-10ms', 5e6, 10e6],
  ['10-50ms', 10e6, 50e6],
  ['50-100ms', 50e6, 100e6],
  ['100ms+', 100e6, Infinity],
];
export type RangeLabel = '0-1ms' | '1-5ms' | '5-10ms' | '10-50ms' | '50-100ms' | '100ms+';

/** Counts per report bin; a bucket straddling a bin edge goes where its midpoint (bucketMid) is. */
export function rangeCounts(h: HistogramSnapshot): Record<RangeLabel, number> {
  const out = Object.fromEntries(RANGE_BINS.map(([l]) => [l, 0])) as Record<RangeLabel, number>;
  for (const [i, c] of h.buckets) {
    const m = bucketMid(i);
    for (const [label, lo, hi] of RANGE_BINS) {
      if (m >= lo && (m < hi || hi === Infinity)) {
        out[label as RangeLabel] += c;
        break;
      }
    }
  }
  return out;
}

/** Non-empty buckets as [lower_ns, upper_ns, count] (JSON-friendly, mergeable across hosts). */
export function toBucketList(h: HistogramSnapshot): BucketList {
  return h.buckets.filter(([, c]) => c > 0).map(([i, c]) => [bucketLower(i), bucketUpper(i), c]);
}

/**
 * Rebuilds a snapshot from toBucketList() output (buckets are located by
 * lower bound; duplicates add up). Without `extra`, min/max are the lowest
 * lower bound / the highest bucket's last value, and sum uses bucket
 * midpoints (the overflow bucket counts as its lower bound).
 */
export function fromBucketList(
  list: readonly (readonly [number, number, number])[],
  extra: Partial<Pick<HistogramSnapshot, 'sum_ns' | 'min_ns' | 'max_ns'>> = {},
): HistogramSnapshot {
  const counts = new Map<number, number>();
  for (const [lower, , c] of list) {
    if (!(c > 0)) continue;
    const i = bucketIndex(lower);
    counts.set(i, (counts.get(i) ?? 0) + c);
  }
  if (counts.size === 0) return emptyHistogram();
  const buckets = [...counts.entries()].sort((a, b) => a[0] - b[0]);
  const count = buckets.reduce((a, [, c]) => a + c, 0);
  const first = buckets[0][0],
    last = buckets[buckets.length - 1][0];
  const ovf = overflowIndex();
  const sum = buckets.reduce((a, [i, c]) => a + c * (i === ovf ? bucketLower(i) : bucketMid(i)), 0);
  return {
    count,
    sum_ns: extra.sum_ns ?? sum,
    min_ns: extra.min_ns ?? bucketLower(first),
    max_ns: extra.max_ns ?? (last === ovf ? bucketLower(last) : bucketUpper(last) - 1),
    buckets,
  };
}

/**
 * cur - prev, for two snapshots of the same cumulative histogram (an
 * interval's counts). min/max of an interval are not known from cumulative
 * snapshots: they become the bounds of the lowest and highest bucket that
 * changed.
 */
export function diff(cur: HistogramSnapshot, prev: HistogramSnapshot | undefined): HistogramSnapshot {
  if (!prev || prev.count === 0) return { ...cur, buckets: cur.buckets.map(([i, c]) => [i, c] as [number, number]) };
  const before = new Map(prev.buckets);
  const buckets: [number, number][] = [];
  for (const [i, c] of cur.buckets) {
    const d = c - (before.get(i) ?? 0);
    if (d > 0) buckets.push([i, d]);
  }
  if (buckets.length === 0) return emptyHistogram();
  const count = buckets.reduce((a, [, c]) => a + c, 0);
  const last = buckets[buckets.length - 1][0];
  return {
    count,
    sum_ns: Math.max(0, cur.sum_ns - prev.sum_ns),
    min_ns: bucketLower(buckets[0][0]),
    max_ns: last === overflowIndex() ? bucketLower(last) : bucketUpper(last) - 1,
    buckets,
  };
}

/**
 * histogram_quantile over classic (le-bucketed) histograms, exactly as
 * Prometheus computes it (promql/quantile.go, bucketQuantile):
 *
 * - q is NaN: NaN; q < 0: -Inf; q > 1: +Inf (checked first, whatever the buckets);
 * - buckets sorted by upper bound; the highest must be +Inf, else NaN;
 * - buckets with the same upper bound are merged (counts added), so le="1",
 *   "1.0" and "1e+00" are one bucket;
 * - counts within a relative 1e-12 of the previous one are set equal to it
 *   (float noise, Prometheus >= 2.54's correctPrecisionErrors), then counts
 *   are made monotonic (each at least the one before it);
 * - fewer than 2 buckets, or a total (the +Inf count) of 0: NaN;
 * - rank = q * total; the answer lies in the first bucket whose count >= rank
 *   (searching all but the +Inf bucket); if none, the +Inf bucket: the answer
 *   is the second-highest bound;
 * - in the first bucket with an upper bound <= 0, that bound is the answer;
 * - otherwise linear interpolation between the previous bound (0 for the
 *   first bucket) and this one, by (rank - previous count) / (this count -
 *   previous count). (q = 0 with an empty first bucket gives 0/0 = NaN, as in
 *   Prometheus.)
 *
 * Bounds that are NaN are left out (Prometheus's sort order is undefined for them).
 */

export interface Bucket {
  /** upper bound (le), Infinity for +Inf */
  le: number;
  /** cumulative count */
  count: number;
}

export interface QuantileDetail {
  /** the quantile, as Prometheus returns it (NaN, ±Inf included) */
  value: number;
  /** index into `buckets` of the bucket the answer comes from; -1 when NaN/±Inf by rule */
  index: number;
  /** that bucket's lower edge as used by the interpolation (0 for the first bucket when its bound > 0) */
  lower: number;
  /** its upper bound (Infinity for +Inf) */
  upper: number;
  /** the answer is the highest finite bound because the rank fell in the +Inf bucket */
  inInf: boolean;
  /** the buckets after sorting, merging, precision correction and the monotonic fix */
  buckets: Bucket[];
  forcedMonotonic: boolean;
  /** why the value is NaN, when it is */
  reason?: string;
}

/** Sorted, equal bounds merged, precision-corrected, made monotonic: what bucketQuantile works on. */
export function normalizeBuckets(input: readonly Bucket[]): { buckets: Bucket[]; forcedMonotonic: boolean } {
  const sorted = input.filter((b) => !Number.isNaN(b.le)).map((b) => ({ le: b.le, count: b.count }));
  sorted.sort((a, b) => (a.le < b.le ? -1 : a.le > b.le ? 1 : 0));
  // coalesceBuckets
  const merged: Bucket[] = [];
  for (const b of sorted) {
    const last = merged.at(-1);
    if (last && last.le === b.le) last.count += b.count;
    else merged.push({ ...b });
  }
  if (merged.length === 0) return { buckets: merged, forcedMonotonic: false };
  // correctPrecisionErrors(buckets, 1e-12)
  let prev = merged[0].count;
  for (let i = 1; i < merged.length; i++) {
    const curr = merged[i].count;
    const delta = Math.abs(curr - prev);
    if (delta === 0) continue;
    if (delta / curr <= 1e-12) merged[i].count = prev;
    else prev = curr;
  }
  // ensureMonotonic
  let forced = false;
  let max = merged[0].count;
  for (let i = 1; i < merged.length; i++) {
    if (merged[i].count > max) max = merged[i].count;
    else if (merged[i].count < max) {
      merged[i].count = max;
      forced = true;
    }
  }
  return { buckets: merged, forcedMonotonic: forced };
}

export function quantileDetail(q: number, input: readonly Bucket[]): QuantileDetail {
  const nan = (reason: string, buckets: Bucket[] = [], forcedMonotonic = false): QuantileDetail => ({
    value: NaN,
    index: -1,
    lower: NaN,
    upper: NaN,
    inInf: false,
    buckets,
    forcedMonotonic,
    reason,
  });
  if (Number.isNaN(q)) return nan('the quantile is NaN');
  if (q < 0) return { ...nan('q < 0'), value: -Infinity, reason: undefined };
  if (q > 1) return { ...nan('q > 1'), value: Infinity, reason: undefined };
  if (input.length === 0) return nan('no buckets');
  const { buckets, forcedMonotonic } = normalizeBuckets(input);
  if (buckets.length === 0 || buckets[buckets.length - 1].le !== Infinity)
    return nan('no le="+Inf" bucket', buckets, forcedMonotonic);
  if (buckets.length < 2) return nan('only the +Inf bucket', buckets, forcedMonotonic);
  const n = buckets.length;
  const observations = buckets[n - 1].count;
  if (observations === 0) return nan('no requests (the +Inf bucket is 0)', buckets, forcedMonotonic);
  let rank = q * observations;
  // sort.Search(n-1, count >= rank)
  let b = n - 1;
  for (let i = 0; i < n - 1; i++) {
    if (buckets[i].count >= rank) {
      b = i;
      break;
    }
  }
  const base = { buckets, forcedMonotonic, index: b };
  if (b === n - 1) {
    return { ...base, value: buckets[n - 2].le, lower: buckets[n - 2].le, upper: Infinity, inInf: true };
  }
  if (b === 0 && buckets[0].le <= 0) {
    return { ...base, value: buckets[0].le, lower: buckets[0].le, upper: buckets[0].le, inInf: false };
  }
  let bucketStart = 0;
  const bucketEnd = buckets[b].le;
  let count = buckets[b].count;
  if (b > 0) {
    bucketStart = buckets[b - 1].le;
    count -= buckets[b - 1].count;
    rank -= buckets[b - 1].count;
  }
  const value = bucketStart + (bucketEnd - bucketStart) * (rank / count);
  return {
    ...base,
    value,
    lower: bucketStart,
    upper: bucketEnd,
    inInf: false,
    ...(Number.isNaN(value) ? { reason: 'q = 0 with an empty first bucket' } : {}),
  };
}

/** Prometheus's histogram_quantile(q, buckets) for one series group. */
export function histogramQuantile(q: number, buckets: readonly Bucket[]): number {
  return quantileDetail(q, buckets).value;
}

/**
 * Adds series bucket by bucket, by numeric le: what `sum by (le, ...)`
 * followed by histogram_quantile's merging of equal bounds amounts to.
 */
export function sumBuckets(series: Iterable<readonly Bucket[]>): Bucket[] {
  const byLe = new Map<number, number>();
  for (const s of series) for (const b of s) byLe.set(b.le, (byLe.get(b.le) ?? 0) + b.count);
  return [...byLe.entries()].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
}

/**
 * A float as Go's strconv.ParseFloat reads it in Prometheus's parsers
 * (decimal forms and exponents, "+Inf"/"-Inf"/"Inf"/"Infinity"/"NaN" in any
 * case); undefined when it is not one. Hexadecimal floats are not accepted.
 */
export function parseGoFloat(s: string): number | undefined {
  if (/^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/.test(s)) return Number(s);
  const l = s.toLowerCase();
  if (l === '+inf' || l === 'inf' || l === '+infinity' || l === 'infinity') return Infinity;
  if (l === '-inf' || l === '-infinity') return -Infinity;
  if (l === 'nan') return NaN; // Go accepts no sign before NaN
  return undefined;
}

/**
 * How a histogram is shown in every report: counts, the report's bins,
 * percentiles in milliseconds, and the raw buckets (mergeable across hosts).
 */
import {
  mean,
  percentile,
  rangeCounts,
  toBucketList,
  type BucketList,
  type HistogramSnapshot,
  type RangeLabel,
} from '../histogram.js';

export const PERCENTILES = [
  ['p50', 0.5],
  ['p75', 0.75],
  ['p90', 0.9],
  ['p95', 0.95],
  ['p99', 0.99],
  ['p999', 0.999],
] as const;
export type PercentileName = (typeof PERCENTILES)[number][0];

export function ms(ns: number): number {
  return Math.round(ns / 100) / 1e4; // 0.1 µs resolution
}

export function percentilesMs(h: HistogramSnapshot): Record<PercentileName, number> {
  return Object.fromEntries(PERCENTILES.map(([n, q]) => [n, ms(percentile(h, q))])) as Record<PercentileName, number>;
}

export interface ViewSummary {
  total_requests: number;
  latency_histogram: Record<RangeLabel, number>;
  percentiles: Record<PercentileName, number>;
  mean_ms: number;
  min_ms: number;
  max_ms: number;
  /** [lower_ns, upper_ns, count] of every non-empty bucket: merge these, never the percentiles */
  buckets: BucketList;
}

export function viewSummary(h: HistogramSnapshot): ViewSummary {
  return {
    total_requests: h.count,
    latency_histogram: rangeCounts(h),
    percentiles: percentilesMs(h),
    mean_ms: ms(mean(h)),
    min_ms: ms(h.min_ns),
    max_ms: ms(h.max_ns),
    buckets: toBucketList(h),
  };
}

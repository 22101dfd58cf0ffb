/**
 * What every exporter (JSON stream, InfluxDB, Prometheus) is given: a probe's
 * figures as named series with labels, independent of the probe. A probe
 * turns its report figures into a MetricSet (src/report/<probe>.ts); the
 * exporters never look inside a probe.
 *
 * Units: histograms hold nanoseconds (HistogramSnapshot); exporters write
 * seconds, the base unit (Prometheus `_seconds`, Influx fields `*_seconds`).
 */
import { type HistogramSnapshot } from '../histogram.js';
import type { State } from '../wasm.js';
import type { MapReader } from '../pipeline/session.js';

export type Labels = Record<string, string>;

export interface HistogramSeries {
  /** metric name without prefix or unit, e.g. "request_duration" */
  name: string;
  help: string;
  labels: Labels;
  hist: HistogramSnapshot;
}

export interface ScalarSeries {
  /** counters: without "_total" (the exporter adds it); gauges: full name without prefix */
  name: string;
  help: string;
  labels: Labels;
  value: number;
}

/** One counter or gauge: scalar('requests', 'Exchanges measured', n, { view: 'client' }). */
export function scalar(name: string, help: string, value: number, labels: Labels = {}): ScalarSeries {
  return { name, help, labels, value };
}

export interface MetricSet {
  probe: string;
  host: string;
  /** the span these figures cover: since the probe started (cumulative) or one interval (delta) */
  start: Date;
  end: Date;
  /** true: counts since start (Prometheus); false: counts of [start, end) only (stream, Influx) */
  cumulative: boolean;
  histograms: HistogramSeries[];
  counters: ScalarSeries[];
  gauges: ScalarSeries[];
}

/** Everything in the metric names exporters write starts with this. */
export const METRIC_PREFIX = 'meshprobe_';

/** Sampling as every output states it. */
export interface SamplingInfo {
  mode: 'fixed' | 'auto';
  /** the rate in force at the end of the span: 1 request in `rate` is measured */
  rate: number;
  /** the changes in the span (auto), each with its time in seconds since the start */
  changes?: { at_s: number; from: number; to: number; reason: string }[];
  /** all changes since the start (auto) */
  change_count?: number;
}

/** How a probe's figures are read, differenced and shown (src/report/<probe>.ts). */
export interface ProbeOutputs<F> {
  /** cumulative figures now (maps: the probe's own per-CPU count maps) */
  read(state: State, kernelStats: bigint[], maps: MapReader): F;
  /** the figures of the interval between two readings */
  diff(cur: F, prev: F | undefined): F;
  /** one line of the JSON stream */
  interval(f: F, span: { start: Date; end: Date; seq: number }, sampling: SamplingInfo): unknown;
  metricSet(f: F, span: { start: Date; end: Date; cumulative: boolean }, sampling: SamplingInfo): MetricSet;
  /** called every second while the probe runs (e.g. to learn who owns what before it goes away) */
  watch?(state: State, kernelStats: bigint[], maps: MapReader): void;
  /** the live line's figures */
  progress(f: F): { requests: number; p50_ms: number | null; p99_ms: number | null; lost: number };
  /** for --sample-rate auto: exchanges finished (measured or not) and records lost, from the kernel counters */
  demand(kernelStats: bigint[]): { seen: number; lost: number };
}

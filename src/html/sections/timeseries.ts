/**
 * Over time, from a json-stream input's interval lines: latency percentiles
 * and request rate (latency-probe), drops per second (packet-drop-probe),
 * connections opened and failed per second (connection-tracker).
 */
import { type Html } from '../html.js';
import { get, num, num0, obj, quantiles, str, type Obj } from '../read.js';
import { lineChart, type LineSeries, type LinePoint } from '../charts/line.js';
import { latencyAxis } from '../charts/frame.js';
import { linearScale } from '../scale.js';
import { fmtCount, fmtMs, sig, tickCount } from '../format.js';
import { QUANTILE_COLOR, SERIES, VIEW_COLOR } from '../palette.js';
import { grid, section, type ReportInputs, type Section } from '../section.js';
import type { LoadedInput } from '../inputs.js';

export interface TimedInterval {
  /** seconds from the first interval's start to this one's middle */
  t: number;
  seconds: number;
  doc: Obj;
}

export function timeline(intervals: readonly Obj[]): TimedInterval[] {
  const parsed = intervals
    .map((doc) => ({ doc, start: Date.parse(str(doc.start) ?? ''), end: Date.parse(str(doc.end) ?? '') }))
    .filter((x) => Number.isFinite(x.start) && Number.isFinite(x.end) && x.end > x.start)
    .sort((a, b) => a.start - b.start);
  if (parsed.length === 0) return [];
  const t0 = parsed[0].start;
  return parsed.map((x) => ({
    t: ((x.start + x.end) / 2 - t0) / 1000,
    seconds: num(x.doc.duration_seconds) ?? (x.end - x.start) / 1000,
    doc: x.doc,
  }));
}

const tickTime = (s: number) => (s >= 120 ? `${sig(s / 60)} min` : `${sig(s)} s`);

function timeAxis(points: LinePoint[]) {
  const max = Math.max(0, ...points.map((p) => p.x));
  return (range: [number, number]) => ({
    scale: linearScale(0, max || 1, range, 6),
    label: 'time since the start',
    format: tickTime,
  });
}

function rateChart(chart: string, title: string, series: LineSeries[], unit: string, caption: string): Html {
  const pts = series.flatMap((s) => s.points);
  return lineChart({
    chart,
    title,
    series,
    caption,
    subtitle: 'per interval',
    x: timeAxis(pts),
    y: (range) => ({
      scale: linearScale(0, Math.max(0, ...pts.map((p) => p.y)) || 1, range, 5),
      label: unit,
      format: tickCount,
    }),
    alt: `${title} over time`,
    height: 240,
  });
}

function latencyCharts(input: LoadedInput): Html[] {
  const tl = timeline(input.intervals);
  if (tl.length < 2) return [];
  const view = str(input.report.metrics && obj(input.report.metrics).view) === 'server' ? 'server' : 'client';
  const qs = (['p50', 'p99', 'p999'] as const)
    .map((n): LineSeries => {
      const points = tl.flatMap((x) => {
        const q =
          quantiles(get(x.doc, 'metrics', view, 'percentiles')) ?? quantiles(get(x.doc, 'metrics', 'percentiles'));
        const v = q?.[n];
        return num0(get(x.doc, 'metrics', view, 'total_requests')) > 0 && typeof v === 'number'
          ? [{ x: x.t, y: v }]
          : [];
      });
      const label = n === 'p999' ? 'p99.9' : n;
      return {
        key: n,
        label: `${view} ${label}`,
        color: QUANTILE_COLOR[n],
        points,
        markers: points.map((p) => ({ ...p, title: `${label} ${fmtMs(p.y)} at ${tickTime(p.x)}` })),
        title: `${view} view ${label} per interval`,
      };
    })
    .filter((s) => s.points.length > 0);
  const out: Html[] = [];
  if (qs.length) {
    const ys = qs.flatMap((s) => s.points.map((p) => p.y));
    out.push(
      lineChart({
        chart: 'latency-timeseries',
        title: 'Latency over time',
        subtitle: `${view} view, per interval`,
        series: qs,
        x: timeAxis(qs.flatMap((s) => s.points)),
        y: latencyAxis(ys),
        caption: `Each point is one interval of the json-stream (${tl.length} intervals); intervals without requests have none.`,
        alt: 'Latency percentiles per interval',
        height: 240,
      }),
    );
  }
  const rates = (['client', 'server'] as const)
    .map((v): LineSeries => {
      const points = tl.map((x) => ({
        x: x.t,
        y: num0(get(x.doc, 'metrics', v, 'total_requests')) / (x.seconds || 1),
      }));
      return {
        key: v,
        label: `${v} view`,
        color: VIEW_COLOR[v],
        points,
        title: `${v} view requests per second`,
        markers: points.map((p) => ({ ...p, title: `${v}: ${fmtCount(Math.round(p.y))}/s at ${tickTime(p.x)}` })),
      };
    })
    .filter((s) => s.points.some((p) => p.y > 0));
  if (rates.length)
    out.push(
      rateChart(
        'request-rate',
        'Request rate',
        rates,
        'requests per second',
        'Requests measured per second of each interval.',
      ),
    );
  return out;
}

function dropCharts(input: LoadedInput): Html[] {
  const tl = timeline(input.intervals);
  if (tl.length < 2) return [];
  const points = tl.map((x) => ({ x: x.t, y: num0(get(x.doc, 'drops', 'total')) / (x.seconds || 1) }));
  return [
    rateChart(
      'drops-timeseries',
      'Drops over time',
      [
        {
          key: 'drops',
          label: 'drops per second',
          color: SERIES[3],
          points,
          title: 'drops per second',
          markers: points.map((p) => ({ ...p, title: `${fmtCount(p.y)} drops/s at ${tickTime(p.x)}` })),
        },
      ],
      'packets per second',
      'Packets dropped per second of each interval.',
    ),
  ];
}

function connectionCharts(input: LoadedInput): Html[] {
  const tl = timeline(input.intervals);
  if (tl.length < 2) return [];
  const of = (field: (d: Obj) => number, key: string, label: string, color: string): LineSeries => {
    const points = tl.map((x) => ({ x: x.t, y: field(obj(x.doc.connections)) / (x.seconds || 1) }));
    return {
      key,
      label,
      color,
      points,
      title: label,
      markers: points.map((p) => ({ ...p, title: `${label}: ${fmtCount(p.y)} at ${tickTime(p.x)}` })),
    };
  };
  return [
    rateChart(
      'connections-timeseries',
      'Connections over time',
      [
        of((c) => num0(c.opened), 'opened', 'opened per second', SERIES[0]),
        of((c) => num0(obj(c.failed).total), 'failed', 'failed connects per second', SERIES[3]),
      ],
      'connections per second',
      'Connections set up (both sides) and connects that failed, per second of each interval.',
    ),
  ];
}

export function timeSeriesSection(inputs: ReportInputs): Section | undefined {
  const charts = [
    ...(inputs.latency ? latencyCharts(inputs.latency) : []),
    ...(inputs.connections ? connectionCharts(inputs.connections) : []),
    ...(inputs.drops ? dropCharts(inputs.drops) : []),
  ];
  if (charts.length === 0) return undefined;
  return section('timeseries', 'Over time', grid(...charts));
}

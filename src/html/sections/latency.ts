/**
 * Latency: per view (client, server, network) a CDF from the raw buckets
 * and histograms re-binned from them; per service, the percentiles the
 * report keeps as a CDF on a percentile scale and counts per report range;
 * tables of views, services and the busiest connections.
 */
import { html, type Html } from '../html.js';
import {
  arr,
  get,
  isObj,
  num,
  num0,
  obj,
  quantiles,
  str,
  QUANTILE_LABEL,
  QUANTILE_NAMES,
  QUANTILE_Q,
  type Obj,
  type Quantiles,
} from '../read.js';
import { bucketsMs, cdfFromBuckets, quantilePoints, rebinLog, RANGE_LABELS, type MsBucket } from '../distribution.js';
import { lineChart, type LineSeries, type Marker } from '../charts/line.js';
import { histogramChart } from '../charts/histogram.js';
import { columnChart } from '../charts/bars.js';
import { emptyChart, latencyAxis } from '../charts/frame.js';
import { autoScale, linearScale, tailScale } from '../scale.js';
import { fmtCount, fmtMs, fmtPct, sig, tickCount } from '../format.js';
import { seriesColor, VIEW_COLOR } from '../palette.js';
import { grid, note, section, table, type ReportInputs, type Section } from '../section.js';
import type { LoadedInput } from '../inputs.js';

export const VIEWS = ['client', 'server', 'network'] as const;
export type ViewName = (typeof VIEWS)[number];

export const VIEW_LABEL: Record<ViewName, string> = {
  client: 'client view',
  server: 'server view',
  network: 'network (kernel min RTT)',
};

/** Latency axes turn logarithmic when values span more than this factor. */
export const LOG_RATIO = 8;

/** At most this many services get a line or bars of their own; the table lists all. */
export const MAX_SERVICE_SERIES = 8;

export interface LatencySource {
  metrics: Obj;
  input: LoadedInput;
  /** the metrics come from connection-tracker's report (no latency report was given) */
  borrowed: boolean;
}

/** The latency figures: the latency report's, else those connection-tracker's report carries. */
export function latencySource(inputs: ReportInputs): LatencySource | undefined {
  if (inputs.latency) return { metrics: obj(inputs.latency.report.metrics), input: inputs.latency, borrowed: false };
  const c = inputs.connections;
  if (c && isObj(c.report.metrics)) return { metrics: c.report.metrics, input: c, borrowed: true };
  return undefined;
}

export interface View {
  name: ViewName;
  requests: number;
  q: Quantiles | null;
  mean: number | null;
  min: number | null;
  max: number | null;
  buckets: MsBucket[];
  ranges: Obj;
}

export function viewsOf(metrics: Obj): View[] {
  return VIEWS.map((name) => {
    const v = obj(metrics[name]);
    const max = num(v.max_ms);
    return {
      name,
      requests: num0(v.total_requests),
      q: quantiles(v.percentiles),
      mean: num(v.mean_ms),
      min: num(v.min_ms),
      max,
      buckets: bucketsMs(v.buckets, max),
      ranges: obj(v.latency_histogram),
    };
  }).filter((v) => v.requests > 0);
}

export interface ServiceRow {
  key: string;
  service: string;
  role: string;
  port: number | null;
  peer: string;
  requests: number;
  q: Quantiles | null;
  mean: number | null;
  ranges: Obj;
  buckets: MsBucket[];
}

export function servicesOf(metrics: Obj): ServiceRow[] {
  return arr(metrics.services)
    .filter(isObj)
    .map((s) => {
      const service = str(s.service) ?? '?';
      const role = str(s.role) ?? 'unknown';
      const peer = Array.isArray(s.peer) ? s.peer.map(String).join(', ') : (str(s.peer) ?? '');
      return {
        key: `${service} (${role})`,
        service,
        role,
        port: num(s.port),
        peer,
        requests: num0(s.requests),
        q: quantiles(s.percentiles),
        mean: num(s.mean_ms),
        ranges: obj(s.latency_histogram),
        buckets: bucketsMs(s.buckets, num(s.max_ms)),
      };
    })
    .sort((a, b) => b.requests - a.requests);
}

const pctTick = (v: number) => `${Math.round(v * 1000) / 10} %`;
const tailTick = (q: number) => (q === 0 ? '0' : `p${sig(q * 100, 6)}`);

function quantileMarkers(
  label: string,
  q: Quantiles | null,
  names: readonly string[] = ['p50', 'p90', 'p99', 'p999'],
): Marker[] {
  if (!q) return [];
  return QUANTILE_NAMES.flatMap((n) => {
    const x = q[n];
    if (!names.includes(n) || typeof x !== 'number') return [];
    return [{ x, y: QUANTILE_Q[n], title: `${label}: ${QUANTILE_LABEL[n]} ${fmtMs(x)}` }];
  });
}

/** The CDF of each view: full curves from buckets, or the percentiles when a view has no buckets. */
export function viewCdfChart(views: View[]): Html {
  if (views.length === 0)
    return emptyChart('latency-cdf', 'Latency CDF per view', 'No requests were measured: nothing to draw.');
  const series: LineSeries[] = views.map((v) => {
    const full = v.buckets.length > 0;
    const pts = full ? cdfFromBuckets(v.buckets) : quantilePoints(v.q);
    return {
      key: v.name,
      label: `${VIEW_LABEL[v.name]} (${fmtCount(v.requests)})`,
      color: VIEW_COLOR[v.name],
      points: pts,
      sparse: !full,
      markers: quantileMarkers(VIEW_LABEL[v.name], v.q),
      title: `${VIEW_LABEL[v.name]}: ${fmtCount(v.requests)} requests, p50 ${fmtMs(v.q?.p50)}, p99 ${fmtMs(v.q?.p99)}`,
    };
  });
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const sparse = series.some((s) => s.sparse);
  return lineChart({
    chart: 'latency-cdf',
    title: 'Latency CDF per view',
    subtitle: 'share of requests at or below a latency',
    series,
    x: latencyAxis(xs, LOG_RATIO),
    y: (range) => ({ scale: linearScale(0, 1, range, 5), label: 'requests ≤ latency', format: pctTick }),
    caption: html`Drawn from each view's histogram buckets (64 per power of two, each at most 1.6 % wide): exact at every bucket edge.
Dots mark p50, p90, p99 and p99.9. The network line is the kernel's smoothed RTT of the measured connections, not a request latency.${sparse ? ' Dashed: a view without buckets in the report, drawn through its percentiles only.' : ''}`,
    alt: `Cumulative distribution of request latency for the ${views.map((v) => v.name).join(', ')} views`,
    data: { 'x-scale': autoScale(xs, [0, 1], LOG_RATIO).kind },
  });
}

/** A histogram panel per view, re-binned to 10 bins per decade. */
export function viewHistogramChart(views: View[]): Html {
  const withBuckets = views.filter((v) => v.buckets.length > 0);
  if (withBuckets.length === 0) {
    if (views.length === 0)
      return emptyChart(
        'latency-histogram',
        'Latency histogram per view',
        'No requests were measured: nothing to draw.',
      );
    return rangeColumns(
      'latency-histogram',
      'Latency histogram per view',
      views.map((v) => ({ key: v.name, label: VIEW_LABEL[v.name], color: VIEW_COLOR[v.name], ranges: v.ranges })),
      'The report has no buckets for these views: counts in its six latency ranges.',
    );
  }
  return histogramChart({
    chart: 'latency-histogram',
    title: 'Latency histogram per view',
    subtitle: '10 bins per decade',
    panels: withBuckets.map((v) => ({
      key: v.name,
      label: VIEW_LABEL[v.name],
      color: VIEW_COLOR[v.name],
      bins: rebinLog(v.buckets, 10),
    })),
    xLabel: 'latency (log scale)',
    caption:
      'Each bin holds the probe buckets whose midpoint falls in it (a bucket is at most 1.6 % wide, so a bin edge is off by at most that much). Bins are equal on the log axis, so their heights compare.',
    alt: `Histograms of request latency for the ${withBuckets.map((v) => v.name).join(', ')} views`,
  });
}

function rangeColumns(
  chart: string,
  title: string,
  series: { key: string; label: string; color: string; ranges: Obj }[],
  caption: string,
  instance?: string,
): Html {
  const cats = RANGE_LABELS.map((l) => ({ key: l, label: l.replace('ms', ' ms').replace('-', '–') }));
  return columnChart({
    chart,
    instance,
    title,
    subtitle: "the report's latency ranges",
    categories: cats,
    series: series.map((s) => ({ key: s.key, label: s.label, color: s.color })),
    values: RANGE_LABELS.map((l) => series.map((s) => num(s.ranges[l]))),
    mode: 'grouped',
    valueLabel: 'requests',
    format: tickCount,
    tip: (c, s, v) => `${s.label}: ${fmtCount(v)} requests in ${c.label}`,
    caption,
    alt: `${title}: requests per latency range`,
  });
}

/** Services' CDFs on a percentile scale: p50, p90, p99, p99.9 evenly spaced. */
export function serviceCdfChart(services: ServiceRow[]): Html {
  const shown = services.filter((s) => s.q || s.buckets.length).slice(0, MAX_SERVICE_SERIES);
  if (shown.length === 0) return emptyChart('service-cdf', 'Latency per service', 'No service has measured requests.');
  const series: LineSeries[] = shown.map((s, i) => {
    const full = s.buckets.length > 0;
    return {
      key: s.key,
      label: s.key,
      color: seriesColor(i),
      points: full ? cdfFromBuckets(s.buckets).filter((p) => p.y > 0) : quantilePoints(s.q),
      sparse: !full,
      markers: quantileMarkers(s.key, s.q, ['p50', 'p75', 'p90', 'p95', 'p99', 'p999']),
      title: `${s.key}: ${fmtCount(s.requests)} requests`,
    };
  });
  const xs = series.flatMap((s) => s.points.map((p) => p.x));
  const full = series.every((s) => !s.sparse);
  return lineChart({
    chart: 'service-cdf',
    title: 'Latency per service',
    subtitle: 'CDF on a percentile scale',
    series,
    x: latencyAxis(xs, LOG_RATIO),
    y: (range) => ({ scale: tailScale(range, 3), label: 'percentile', format: tailTick }),
    caption: html`${full ? "Drawn from each service's buckets." : 'The report keeps six percentiles per service (p50, p75, p90, p95, p99, p99.9), not its buckets: each line joins those points, and between them the shape is unknown.'}
The y axis spreads the tail: p50, p90, p99 and p99.9 are equally spaced.${services.length > shown.length ? ` The ${shown.length} busiest of ${services.length} services are drawn; the table lists all.` : ''}`,
    alt: `Latency percentiles of ${shown.length} services`,
  });
}

export function serviceHistogramChart(services: ServiceRow[]): Html {
  const shown = services.filter((s) => Object.keys(s.ranges).length > 0).slice(0, MAX_SERVICE_SERIES);
  if (shown.length === 0)
    return emptyChart(
      'service-histogram',
      'Requests per latency range, per service',
      'No service has measured requests.',
    );
  return rangeColumns(
    'service-histogram',
    'Requests per latency range, per service',
    shown.map((s, i) => ({ key: s.key, label: s.key, color: seriesColor(i), ranges: s.ranges })),
    `Counts in the report's six ranges (a probe bucket goes to the range holding its midpoint).${services.length > shown.length ? ` The ${shown.length} busiest of ${services.length} services are drawn.` : ''}`,
  );
}

const q = (x: Quantiles | null, n: keyof Quantiles) => fmtMs(x?.[n] ?? null);

function viewsTable(views: View[]): Html {
  return table(
    'views',
    [
      { head: 'view', cell: (v) => VIEW_LABEL[v.name] },
      { head: 'requests', cell: (v) => fmtCount(v.requests), num: true },
      ...QUANTILE_NAMES.map((n) => ({ head: QUANTILE_LABEL[n], cell: (v: View) => q(v.q, n), num: true })),
      { head: 'mean', cell: (v) => fmtMs(v.mean), num: true },
      { head: 'min', cell: (v) => fmtMs(v.min), num: true },
      { head: 'max', cell: (v) => fmtMs(v.max), num: true },
    ],
    views,
  );
}

function servicesTable(services: ServiceRow[]): Html {
  return table(
    'services',
    [
      { head: 'service', cell: (s) => html`<span class="name">${s.service}</span>` },
      { head: 'role', cell: (s) => s.role },
      { head: 'peer', cell: (s) => s.peer },
      { head: 'requests', cell: (s) => fmtCount(s.requests), num: true },
      { head: 'p50', cell: (s) => q(s.q, 'p50'), num: true },
      { head: 'p90', cell: (s) => q(s.q, 'p90'), num: true },
      { head: 'p99', cell: (s) => q(s.q, 'p99'), num: true },
      { head: 'p99.9', cell: (s) => q(s.q, 'p999'), num: true },
      { head: 'mean', cell: (s) => fmtMs(s.mean), num: true },
    ],
    services,
  );
}

const MAX_CONNECTION_ROWS = 15;

function connectionsTable(metrics: Obj): Html | '' {
  const conns = arr(metrics.connections).filter(isObj);
  if (conns.length === 0) return '';
  const rows = [...conns].sort((a, b) => num0(b.requests) - num0(a.requests)).slice(0, MAX_CONNECTION_ROWS);
  return table(
    'connections',
    [
      {
        head: 'process',
        cell: (c) => {
          const pid = num(c.pid);
          return `${str(c.comm) ?? ''}${pid !== null ? ` (${pid})` : ''}`;
        },
      },
      { head: 'role', cell: (c) => str(c.role) ?? '' },
      { head: 'local', cell: (c) => str(c.local) ?? '' },
      { head: 'remote', cell: (c) => str(c.remote) ?? '' },
      { head: 'requests', cell: (c) => fmtCount(num(c.requests)), num: true },
      { head: 'p50', cell: (c) => q(quantiles(c.percentiles), 'p50'), num: true },
      { head: 'p99', cell: (c) => q(quantiles(c.percentiles), 'p99'), num: true },
      { head: 'srtt', cell: (c) => fmtMs(num(c.srtt_ms)), num: true },
      { head: 'closed', cell: (c) => (c.closed === true ? 'yes' : c.closed === false ? 'no' : '') },
    ],
    rows,
    conns.length > rows.length
      ? `The ${rows.length} busiest of ${fmtCount(conns.length)} connections`
      : `${conns.length} connection${conns.length === 1 ? '' : 's'}`,
  );
}

/** Warnings the figures need next to them: lost records, sampling. */
function caveats(metrics: Obj): Html[] {
  const out: Html[] = [];
  const loss = obj(metrics.loss);
  const lost = Object.entries(loss).filter(([, v]) => num0(v) > 0);
  if (lost.length)
    out.push(
      note(
        html`Some records were lost or left out, so counts are short: ${lost.map(([k, v]) => `${k.replace(/_/g, ' ')} ${fmtCount(num0(v))}`).join(', ')}.`,
        'warn',
      ),
    );
  const rate = num(get(metrics, 'sampling', 'rate'));
  const mode = str(get(metrics, 'sampling', 'mode'));
  if ((rate !== null && rate > 1) || mode === 'auto') {
    out.push(
      note(
        `Sampled: 1 request in ${rate ?? '?'} was measured (${mode ?? 'fixed'}); counts are of measured requests, ~${fmtCount(num(metrics.total_requests_estimated))} in all. Percentiles stand for all requests.`,
        'info',
      ),
    );
  }
  const view = str(metrics.view);
  if (view === 'server')
    out.push(
      note(
        'Only the server side was seen (no client on this host or inside the filter): the client view is empty.',
        'info',
      ),
    );
  return out;
}

export function latencySection(inputs: ReportInputs): Section | undefined {
  const src = latencySource(inputs);
  if (!src) return undefined;
  const views = viewsOf(src.metrics);
  const services = servicesOf(src.metrics);
  const head = src.borrowed
    ? note(
        html`No latency-probe report was given (<code>--include-ebpf-metrics</code>): these are the latency figures of the connection-tracker report, which measures them too.`,
        'info',
      )
    : '';
  const total =
    views.find((v) => v.name === 'client')?.requests ?? views.find((v) => v.name === 'server')?.requests ?? 0;
  const fracFast = (() => {
    const c = views.find((v) => v.name === (str(src.metrics.view) === 'server' ? 'server' : 'client'));
    const under = c ? num(c.ranges['0-1ms']) : null;
    return c && under !== null && c.requests > 0 ? `${fmtPct(under / c.requests)} under 1 ms` : '';
  })();
  return section(
    'latency',
    'Latency',
    head,
    html`<p class="lead">${fmtCount(total)} requests measured${fracFast ? html`, ${fracFast}` : ''}.</p>`,
    caveats(src.metrics),
    grid(viewCdfChart(views), viewHistogramChart(views)),
    views.length ? viewsTable(views) : '',
    html`<h3>Per service</h3>`,
    services.length
      ? grid(serviceCdfChart(services), serviceHistogramChart(services))
      : note('The report names no services (no requests were measured).', 'info'),
    services.length ? servicesTable(services) : '',
    connectionsTable(src.metrics) ? html`<h3>Busiest connections</h3>${connectionsTable(src.metrics)}` : '',
  );
}

/** For other sections: the top view's p50 and p99 (ms), and its requests. */
export function headline(metrics: Obj): { view: string; requests: number; p50: number | null; p99: number | null } {
  const view = str(metrics.view) === 'server' ? 'server' : 'client';
  const v = obj(metrics[view]);
  const qq = quantiles(v.percentiles) ?? quantiles(metrics.percentiles);
  return {
    view,
    requests: num0(v.total_requests ?? metrics.total_requests),
    p50: qq?.p50 ?? null,
    p99: qq?.p99 ?? null,
  };
}

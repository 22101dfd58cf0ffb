/**
 * Line charts: CDFs (x a latency, y a fraction) and time series. Each series
 * is a <g class="series" data-series> holding one path.line and optional
 * point markers (circle.point) with a tooltip each.
 */
import { html, join, type Html, type Part } from '../html.js';
import {
  axes,
  chartFigure,
  chartId,
  plotBox,
  seriesKey,
  WIDTH,
  type AxisSpec,
  type ChartHead,
  type LegendItem,
} from './frame.js';
import type { Scale } from '../scale.js';

export interface LinePoint {
  x: number;
  y: number;
}

export interface Marker extends LinePoint {
  /** tooltip */
  title: string;
  label?: string;
}

export interface LineSeries {
  key: string;
  label: string;
  color: string;
  points: LinePoint[];
  /** a line through a few known points (dashed, with markers), not a full curve */
  sparse?: boolean;
  /** points shown as dots, each with a tooltip */
  markers?: Marker[];
  /** tooltip of the whole line */
  title: string;
  /** draw as steps (a value holds until the next point) */
  step?: boolean;
}

export interface LineChartSpec extends ChartHead {
  series: LineSeries[];
  x: (range: [number, number]) => AxisSpec;
  y: (range: [number, number]) => AxisSpec;
  height?: number;
}

const r = (v: number) => Math.round(v * 10) / 10;

export function pathOf(points: readonly LinePoint[], xs: Scale, ys: Scale, step = false): string {
  let d = '';
  let prev: [number, number] | undefined;
  for (const p of points) {
    if (!Number.isFinite(p.x) || !Number.isFinite(p.y)) continue;
    const px = r(xs(p.x)),
      py = r(ys(p.y));
    if (!prev) d += `M${px},${py}`;
    else if (step) d += `H${px}V${py}`;
    else if (px !== prev[0] || py !== prev[1]) d += `L${px},${py}`;
    prev = [px, py];
  }
  return d;
}

export function lineChart(spec: LineChartSpec): Html {
  const width = spec.wide ? WIDTH * 1.6 : WIDTH;
  const height = spec.height ?? 320;
  const box = plotBox(width, height, { top: 12, right: 18, bottom: 44, left: 64 });
  const x = spec.x([box.left, box.left + box.width]);
  const y = spec.y([box.top + box.height, box.top]);
  const clipId = `${chartId(spec.chart, spec.instance)}-clip`;
  const body: Part[] = [
    html`<defs><clipPath id="${clipId}"><rect x="${box.left - 4}" y="${box.top - 4}" width="${box.width + 8}" height="${box.height + 8}"/></clipPath></defs>`,
    axes(box, x, y),
  ];
  for (const s of spec.series) {
    const d = pathOf(s.points, x.scale, y.scale, s.step);
    const dots = (s.markers ?? []).map(
      (m) =>
        html`<circle class="point" cx="${r(x.scale(m.x))}" cy="${r(y.scale(m.y))}" r="${s.sparse ? 3.5 : 3}" fill="${s.sparse ? s.color : '#fff'}" stroke="${s.color}" stroke-width="1.5"><title>${m.title}</title></circle>`,
    );
    body.push(html`<g class="series" data-series="${seriesKey(s.key)}" data-points="${s.points.length}" clip-path="url(#${clipId})">
<path class="line" d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.sparse ? 1.6 : 2}"${s.sparse ? html` stroke-dasharray="5 3"` : ''} stroke-linejoin="round"><title>${s.title}</title></path>${dots}</g>`);
  }
  const legend: LegendItem[] = spec.series.map((s) => ({
    key: s.key,
    label: s.label,
    color: s.color,
    shape: s.sparse ? 'dash' : 'line',
  }));
  return chartFigure(spec, { legend, series: spec.series.map((s) => s.key), width, height }, join(body));
}

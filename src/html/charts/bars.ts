/**
 * Bar charts. hbarChart: one row per category (long labels fit: service
 * names, drop reasons), bars grouped or stacked by series. columnChart:
 * categories along x (p50, p90, p99; the report's latency bins), bars
 * grouped by series. Each series is a <g class="series" data-series>
 * holding its rect.bar elements, each with a tooltip.
 */
import { html, join, type Html, type Part } from '../html.js';
import {
  axes,
  chartFigure,
  clip,
  plotBox,
  seriesKey,
  textWidth,
  WIDTH,
  type ChartHead,
  type LegendItem,
} from './frame.js';
import { linearScale, logScale, type Scale } from '../scale.js';
import { INK, MUTED } from '../palette.js';

export interface BarSeries {
  key: string;
  label: string;
  color: string;
}

export interface Category {
  key: string;
  label: string;
  /** text right of the row's bars (a total, a note) */
  note?: string;
}

export interface BarChartSpec extends ChartHead {
  categories: Category[];
  series: BarSeries[];
  /** values[category][series]; null: no value (nothing drawn) */
  values: (number | null)[][];
  mode: 'grouped' | 'stacked';
  valueLabel: string;
  format: (v: number) => string;
  /** tooltip of one bar */
  tip: (cat: Category, s: BarSeries, v: number) => string;
  /** no legend when there is one series named after the chart */
  legend?: boolean;
  /** log value axis (grouped bars of values spanning decades) */
  log?: boolean;
}

const r = (v: number) => Math.round(v * 10) / 10;

function valueScale(spec: BarChartSpec, range: [number, number]): Scale {
  const vals = spec.values.flatMap((row) =>
    spec.mode === 'stacked' ? [row.reduce<number>((a, v) => a + (v ?? 0), 0)] : row.map((v) => v ?? 0),
  );
  const max = Math.max(0, ...vals);
  if (spec.log) {
    const pos = spec.values.flat().filter((v): v is number => v !== null && v > 0);
    // the baseline well below the smallest bar, so that it shows
    return logScale(Math.min(...pos, max || 1) / 3, max || 1, range);
  }
  return linearScale(0, max || 1, range, 5);
}

/** The figure of bars: `parts` (axes, labels), then each series' bars as one group. */
function barFigure(spec: BarChartSpec, width: number, height: number, parts: Part[], bySeries: Part[][]): Html {
  spec.series.forEach((s, si) =>
    parts.push(
      html`<g class="series" data-series="${seriesKey(s.key)}" data-bars="${bySeries[si].length}">${bySeries[si]}</g>`,
    ),
  );
  const legend: LegendItem[] | undefined =
    spec.legend === false ? undefined : spec.series.map((s) => ({ key: s.key, label: s.label, color: s.color }));
  return chartFigure(spec, { legend, series: spec.series.map((s) => s.key), width, height }, join(parts));
}

/** Horizontal bars: categories down the left, values along x. */
export function hbarChart(spec: BarChartSpec): Html {
  const width = spec.wide ? WIDTH * 1.6 : WIDTH;
  const nSer = spec.mode === 'grouped' ? spec.series.length : 1;
  const barH = spec.mode === 'grouped' ? Math.max(7, Math.min(18, 40 / nSer)) : 20;
  const rowH = barH * nSer + 10;
  const labelW = Math.min(220, Math.max(60, ...spec.categories.map((c) => textWidth(clip(c.label)) + 12)));
  const noteW = Math.max(0, ...spec.categories.map((c) => (c.note ? textWidth(c.note) + 10 : 0)));
  const height = Math.round(spec.categories.length * rowH + 12 + 46);
  const box = plotBox(width, height, { top: 12, right: 16 + noteW, bottom: 46, left: labelW });
  const xs = valueScale(spec, [box.left, box.left + box.width]);
  const at0 = xs.kind === 'log' ? box.left : xs(0);
  const parts: Part[] = [axes(box, { scale: xs, label: spec.valueLabel, format: spec.format }, undefined)];
  const bySeries: Part[][] = spec.series.map(() => []);
  spec.categories.forEach((c, ci) => {
    const y0 = box.top + ci * rowH + 5;
    parts.push(
      html`<text class="cat" x="${box.left - 8}" y="${r(y0 + (rowH - 10) / 2 + 4)}" text-anchor="end" fill="${INK}">${clip(c.label)}<title>${c.label}</title></text>`,
    );
    let acc = 0;
    let end = at0;
    spec.series.forEach((s, si) => {
      const v = spec.values.at(ci)?.at(si);
      if (v === null || v === undefined || !(v > 0)) return;
      let x0: number, x1: number, y: number;
      if (spec.mode === 'stacked') {
        x0 = xs(acc);
        acc += v;
        x1 = xs(acc);
        y = y0;
      } else {
        x0 = at0;
        x1 = xs(v);
        y = y0 + si * barH;
      }
      end = Math.max(end, x1);
      bySeries[si].push(
        html`<rect class="bar" data-category="${c.key}" data-value="${v}" x="${r(x0)}" y="${r(y)}" width="${r(Math.max(1, x1 - x0))}" height="${r(barH - 1)}" fill="${s.color}"><title>${spec.tip(c, s, v)}</title></rect>`,
      );
    });
    if (c.note)
      parts.push(
        html`<text class="note-label" x="${r(end + 6)}" y="${r(y0 + (rowH - 10) / 2 + 4)}" fill="${MUTED}">${c.note}</text>`,
      );
  });
  return barFigure(spec, width, height, parts, bySeries);
}

/** Vertical bars: categories along x, grouped by series. */
export function columnChart(spec: BarChartSpec & { height?: number }): Html {
  const width = spec.wide ? WIDTH * 1.6 : WIDTH;
  const height = spec.height ?? 300;
  const box = plotBox(width, height, { top: 14, right: 12, bottom: 44, left: 64 });
  const ys = valueScale(spec, [box.top + box.height, box.top]);
  const base = ys.kind === 'log' ? box.top + box.height : ys(0);
  const n = spec.categories.length;
  const slot = box.width / Math.max(1, n);
  const nSer = spec.mode === 'grouped' ? spec.series.length : 1;
  const barW = Math.min(46, (slot * 0.8) / Math.max(1, nSer));
  const parts: Part[] = [axes(box, undefined, { scale: ys, label: spec.valueLabel, format: spec.format })];
  const bySeries: Part[][] = spec.series.map(() => []);
  spec.categories.forEach((c, ci) => {
    const cx = box.left + slot * (ci + 0.5);
    parts.push(
      html`<text class="cat" x="${r(cx)}" y="${box.top + box.height + 16}" text-anchor="middle" fill="${INK}">${clip(c.label, Math.max(6, Math.floor(slot / 6.6)))}<title>${c.label}</title></text>`,
    );
    let acc = 0;
    spec.series.forEach((s, si) => {
      const v = spec.values.at(ci)?.at(si);
      if (v === null || v === undefined || !(v > 0)) return;
      let x: number, y0: number, y1: number;
      if (spec.mode === 'stacked') {
        x = cx - barW / 2;
        y0 = ys(acc);
        acc += v;
        y1 = ys(acc);
      } else {
        x = cx - (barW * nSer) / 2 + si * barW;
        y0 = base;
        y1 = ys(v);
      }
      bySeries[si].push(
        html`<rect class="bar" data-category="${c.key}" data-value="${v}" x="${r(x + 0.5)}" y="${r(y1)}" width="${r(Math.max(1, barW - 1))}" height="${r(Math.max(1, y0 - y1))}" fill="${s.color}"><title>${spec.tip(c, s, v)}</title></rect>`,
      );
    });
  });
  return barFigure(spec, width, height, parts, bySeries);
}

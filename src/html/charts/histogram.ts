/**
 * Latency histograms as small multiples: one panel per series (a view),
 * stacked, sharing one log time axis; each panel's bars span their bins'
 * bounds and its y axis is its own (requests per bin).
 */
import { html, join, type Html, type Part } from '../html.js';
import { axes, chartFigure, plotBox, seriesKey, WIDTH, type ChartHead } from './frame.js';
import { linearScale, logScale } from '../scale.js';
import { tickMs, tickCount, fmtMs, fmtCount } from '../format.js';
import { INK, MUTED } from '../palette.js';

export interface Bin {
  lo: number;
  hi: number;
  count: number;
}

export interface HistogramPanel {
  key: string;
  label: string;
  color: string;
  bins: Bin[];
}

export interface HistogramSpec extends ChartHead {
  panels: HistogramPanel[];
  xLabel: string;
}

const r = (v: number) => Math.round(v * 10) / 10;

export function histogramChart(spec: HistogramSpec): Html {
  const width = WIDTH;
  const panelH = 92,
    gap = 14;
  const height = 14 + spec.panels.length * (panelH + gap) - gap + 46;
  const box = plotBox(width, height, { top: 14, right: 18, bottom: 46, left: 64 });
  const all = spec.panels.flatMap((p) => p.bins.filter((b) => b.count > 0));
  const lo = Math.min(...all.map((b) => b.lo).filter((v) => v > 0), Infinity);
  const hi = Math.max(...all.map((b) => b.hi), 0);
  const xs = logScale(Number.isFinite(lo) ? lo : 1e-3, hi > 0 ? hi : 1, [box.left, box.left + box.width]);
  const parts: Part[] = [axes(box, { scale: xs, label: spec.xLabel, format: tickMs }, undefined)];
  spec.panels.forEach((p, i) => {
    const top = box.top + i * (panelH + gap);
    const max = Math.max(1, ...p.bins.map((b) => b.count));
    const ys = linearScale(0, max, [top + panelH, top + 14], 2);
    const total = p.bins.reduce((a, b) => a + b.count, 0);
    const rects = p.bins
      .filter((b) => b.count > 0)
      .map((b) => {
        const x0 = xs(Math.max(b.lo, xs.domain[0])),
          x1 = xs(b.hi);
        const y = ys(b.count);
        return html`<rect class="bar" x="${r(x0)}" y="${r(y)}" width="${r(Math.max(1, x1 - x0 - 0.5))}" height="${r(Math.max(0.5, top + panelH - y))}" fill="${p.color}"><title>${p.label}: ${fmtCount(b.count)} requests in ${fmtMs(b.lo)} – ${fmtMs(b.hi)}</title></rect>`;
      });
    parts.push(
      html`<line class="axis" x1="${box.left}" x2="${box.left + box.width}" y1="${top + panelH}" y2="${top + panelH}" stroke="#cfcfcf"/>`,
    );
    parts.push(
      html`<text class="tick" x="${box.left - 6}" y="${r(ys(ys.ticks[ys.ticks.length - 1]) + 3.5)}" text-anchor="end" fill="${MUTED}">${tickCount(ys.ticks[ys.ticks.length - 1])}</text>`,
    );
    parts.push(
      html`<text class="tick" x="${box.left - 6}" y="${top + panelH + 3.5}" text-anchor="end" fill="${MUTED}">0</text>`,
    );
    parts.push(html`<g class="series" data-series="${seriesKey(p.key)}" data-bars="${rects.length}">${rects}</g>`);
    parts.push(
      html`<text class="panel-label" x="${box.left + 6}" y="${top + 10}" fill="${INK}" font-weight="600">${p.label}<tspan fill="${MUTED}" font-weight="400"> · ${fmtCount(total)} requests</tspan></text>`,
    );
  });
  parts.push(
    html`<text class="axis-label" transform="translate(${box.left - 48} ${r(box.top + box.height / 2)}) rotate(-90)" text-anchor="middle" fill="${INK}">requests per bin</text>`,
  );
  return chartFigure(
    spec,
    {
      series: spec.panels.map((p) => p.key),
      width,
      height,
      legend: spec.panels.map((p) => ({ key: p.key, label: p.label, color: p.color })),
    },
    join(parts),
  );
}

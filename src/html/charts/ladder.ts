/**
 * Timing rows: one row per measure (TCP set-up, TLS handshake, per side or
 * per service), a bar from p50 to p99 and a marker at each percentile, on a
 * shared log time axis. Percentiles are what the reports keep of these
 * measures, so this shows all there is.
 */
import { html, join, type Html, type Part } from '../html.js';
import { axes, chartFigure, clip, plotBox, seriesKey, textWidth, WIDTH, type ChartHead } from './frame.js';
import { autoScale } from '../scale.js';
import { fmtMs, tickMs } from '../format.js';
import { INK, MUTED, QUANTILE_COLOR } from '../palette.js';

export const LADDER_QUANTILES = [
  ['p50', 'p50'],
  ['p90', 'p90'],
  ['p99', 'p99'],
  ['p999', 'p99.9'],
] as const;
export type LadderQuantile = (typeof LADDER_QUANTILES)[number][0];

export interface LadderRow {
  key: string;
  label: string;
  /** colour of the p50-p99 bar */
  color: string;
  q: Partial<Record<LadderQuantile, number | null>>;
  note?: string;
}

export interface LadderSpec extends ChartHead {
  rows: LadderRow[];
}

const r = (v: number) => Math.round(v * 10) / 10;

export function ladderChart(spec: LadderSpec): Html {
  const width = WIDTH;
  const rowH = 26;
  const labelW = Math.min(230, Math.max(80, ...spec.rows.map((x) => textWidth(clip(x.label, 34)) + 14)));
  const noteW = Math.max(0, ...spec.rows.map((x) => (x.note ? textWidth(x.note) + 10 : 0)));
  const height = spec.rows.length * rowH + 12 + 46;
  const box = plotBox(width, height, { top: 12, right: 18 + noteW, bottom: 46, left: labelW });
  const values = spec.rows.flatMap((x) =>
    Object.values(x.q).filter((v): v is number => typeof v === 'number' && v > 0),
  );
  const xs = autoScale(values, [box.left, box.left + box.width], 8);
  const label = xs.kind === 'log' ? 'time (log scale)' : 'time';
  const parts: Part[] = [axes(box, { scale: xs, label, format: tickMs }, undefined)];
  spec.rows.forEach((row, i) => {
    const cy = box.top + i * rowH + rowH / 2;
    parts.push(
      html`<text class="cat" x="${box.left - 8}" y="${r(cy + 4)}" text-anchor="end" fill="${INK}">${clip(row.label, 34)}<title>${row.label}</title></text>`,
    );
    const q = row.q;
    const marks: Part[] = [];
    if (typeof q.p50 === 'number' && typeof q.p99 === 'number') {
      const x0 = xs(q.p50),
        x1 = xs(q.p99);
      marks.push(
        html`<rect class="bar" x="${r(x0)}" y="${r(cy - 5)}" width="${r(Math.max(2, x1 - x0))}" height="10" rx="3" fill="${row.color}" fill-opacity="0.35"><title>${row.label}: p50 ${fmtMs(q.p50)} to p99 ${fmtMs(q.p99)}</title></rect>`,
      );
    }
    for (const [name, label] of LADDER_QUANTILES) {
      const v = q[name];
      if (typeof v !== 'number') continue;
      marks.push(
        html`<circle class="point" data-quantile="${name}" cx="${r(xs(v))}" cy="${r(cy)}" r="4.5" fill="${QUANTILE_COLOR[name]}" stroke="#fff" stroke-width="1"><title>${row.label}: ${label} ${fmtMs(v)}</title></circle>`,
      );
    }
    parts.push(html`<g class="series" data-series="${seriesKey(row.key)}" data-points="${marks.length}">${marks}</g>`);
    if (row.note)
      parts.push(
        html`<text class="note-label" x="${box.left + box.width + 8}" y="${r(cy + 4)}" fill="${MUTED}">${row.note}</text>`,
      );
  });
  return chartFigure(
    spec,
    {
      series: spec.rows.map((x) => x.key),
      width,
      height,
      legend: LADDER_QUANTILES.map(([k, l]) => ({ key: k, label: l, color: QUANTILE_COLOR[k], shape: 'dot' as const })),
    },
    join(parts),
  );
}

/**
 * What every chart shares: the <figure> around the SVG (title, legend,
 * caption), the plot box, axes with ticks, grid and labels, and truncation
 * of long category labels (the full text stays in a tooltip).
 */
import { html, join, slug, type Html, type Part } from '../html.js';
import { autoScale, type Scale } from '../scale.js';
import { tickMs } from '../format.js';
import { AXIS, GRID, INK, MUTED } from '../palette.js';

export const WIDTH = 640;
export const FONT = 11;

export interface Box {
  left: number;
  top: number;
  width: number;
  height: number;
}

export interface Margins {
  top: number;
  right: number;
  bottom: number;
  left: number;
}

export function plotBox(width: number, height: number, m: Margins): Box {
  return {
    left: m.left,
    top: m.top,
    width: Math.max(10, width - m.left - m.right),
    height: Math.max(10, height - m.top - m.bottom),
  };
}

export interface LegendItem {
  key: string;
  label: string;
  color: string;
  /** 'line' draws a stroke, 'swatch' a filled square (default), 'dot' a circle */
  shape?: 'line' | 'swatch' | 'dot' | 'dash';
}

/** The key of a series in data attributes: its name with the separator (a comma) taken out. */
export function seriesKey(name: string): string {
  return name.replace(/,/g, ' ').trim() || '-';
}

export interface FigureSpec {
  /** the chart's kind: data-chart */
  chart: string;
  /** distinguishes several charts of one kind (e.g. a service); part of the element id */
  instance?: string;
  title: string;
  subtitle?: Part;
  caption?: Part;
  legend?: LegendItem[];
  /** data-series: the series drawn, in order */
  series: string[];
  /** extra data-* attributes on the svg */
  data?: Record<string, string | number>;
  width: number;
  height: number;
  /** the chart's text alternative */
  alt: string;
  wide?: boolean;
}

export function chartId(chart: string, instance?: string): string {
  return `chart-${chart}${instance ? `-${slug(instance)}` : ''}`;
}

/** What a chart's spec says of its figure, whatever it draws. */
export type ChartHead = Pick<
  FigureSpec,
  'chart' | 'instance' | 'title' | 'subtitle' | 'caption' | 'alt' | 'data' | 'wide'
>;

/** A chart's figure: the head its spec gives, with what the drawing made of it (size, series, legend). */
export function chartFigure(
  head: ChartHead,
  drawing: Pick<FigureSpec, 'width' | 'height' | 'series' | 'legend'>,
  body: Part,
): Html {
  const { chart, instance, title, subtitle, caption, alt, data, wide } = head;
  return figure({ chart, instance, title, subtitle, caption, alt, data, wide, ...drawing }, body);
}

/** The figure: title, the SVG (drawn without script), an HTML legend and a caption. */
export function figure(spec: FigureSpec, body: Part): Html {
  const data = Object.entries(spec.data ?? {}).map(([k, v]) => html` data-${slug(k)}="${String(v)}"`);
  const legend = spec.legend?.length
    ? html`<div class="legend">${spec.legend.map((l) => html`<span class="legend-item" data-series="${seriesKey(l.key)}" title="click to hide or show"><i class="sw ${l.shape ?? 'swatch'}" style="--c:${l.color}"></i>${l.label}</span>`)}</div>`
    : '';
  return html`<figure class="card chart-card${spec.wide ? ' wide' : ''}" id="${chartId(spec.chart, spec.instance)}">
<figcaption><span class="chart-title">${spec.title}</span>${spec.subtitle ? html` <span class="chart-sub">${spec.subtitle}</span>` : ''}</figcaption>
<svg class="chart" data-chart="${spec.chart}" data-series="${spec.series.map(seriesKey).join(',')}"${data} viewBox="0 0 ${spec.width} ${spec.height}" width="${spec.width}" height="${spec.height}" role="img" aria-label="${spec.alt}" font-size="${FONT}">
${body}
</svg>
${legend}${spec.caption ? html`<p class="caption">${spec.caption}</p>` : ''}
</figure>`;
}

export interface AxisSpec {
  scale: Scale;
  label: string;
  format: (v: number) => string;
  /** ticks to show, if not the scale's own */
  ticks?: number[];
}

/** A latency axis over these values (ms): logarithmic, and labelled so, when they span more than `ratio`. */
export function latencyAxis(values: readonly number[], ratio?: number): (range: [number, number]) => AxisSpec {
  return (range) => {
    const scale = autoScale(values, range, ratio);
    return { scale, label: `latency${scale.kind === 'log' ? ' (log scale)' : ''}`, format: tickMs };
  };
}

const r1 = (v: number) => Math.round(v * 10) / 10;

/** Grid lines, tick marks and labels, and axis titles of a plot box. */
export function axes(box: Box, x: AxisSpec | undefined, y: AxisSpec | undefined): Html {
  const parts: Part[] = [];
  const bottom = box.top + box.height;
  if (x) {
    const ticks = thin(x.ticks ?? x.scale.ticks, (t) => x.format(t).length * 6.2 + 8, x.scale);
    for (const t of ticks) {
      const px = r1(x.scale(t));
      parts.push(html`<line class="grid" x1="${px}" x2="${px}" y1="${box.top}" y2="${bottom}" stroke="${GRID}"/>`);
      parts.push(html`<line x1="${px}" x2="${px}" y1="${bottom}" y2="${bottom + 4}" stroke="${AXIS}"/>`);
      parts.push(
        html`<text class="tick" x="${px}" y="${bottom + 15}" text-anchor="middle" fill="${MUTED}">${x.format(t)}</text>`,
      );
    }
    parts.push(
      html`<line class="axis" x1="${box.left}" x2="${box.left + box.width}" y1="${bottom}" y2="${bottom}" stroke="${AXIS}"/>`,
    );
    parts.push(
      html`<text class="axis-label" x="${r1(box.left + box.width / 2)}" y="${bottom + 32}" text-anchor="middle" fill="${INK}">${x.label}</text>`,
    );
  }
  if (y) {
    const ticks = y.ticks ?? y.scale.ticks;
    for (const t of ticks) {
      const py = r1(y.scale(t));
      parts.push(
        html`<line class="grid" x1="${box.left}" x2="${box.left + box.width}" y1="${py}" y2="${py}" stroke="${GRID}"/>`,
      );
      parts.push(
        html`<text class="tick" x="${box.left - 6}" y="${py + 3.5}" text-anchor="end" fill="${MUTED}">${y.format(t)}</text>`,
      );
    }
    parts.push(
      html`<line class="axis" x1="${box.left}" x2="${box.left}" y1="${box.top}" y2="${bottom}" stroke="${AXIS}"/>`,
    );
    const cy = r1(box.top + box.height / 2);
    parts.push(
      html`<text class="axis-label" transform="translate(${box.left - 48} ${cy}) rotate(-90)" text-anchor="middle" fill="${INK}">${y.label}</text>`,
    );
  }
  return join(parts);
}

/** Drops ticks whose labels would overlap (keeps the first, then every one with room). */
function thin(ticks: number[], widthOf: (t: number) => number, scale: Scale): number[] {
  const out: number[] = [];
  let lastRight = -Infinity;
  for (const t of ticks) {
    const px = scale(t);
    const w = widthOf(t);
    if (px - w / 2 >= lastRight) {
      out.push(t);
      lastRight = px + w / 2;
    }
  }
  return out;
}

/** A category label cut to `max` characters; the SVG <title> keeps the whole text. */
export function clip(label: string, max = 30): string {
  return label.length > max ? `${label.slice(0, max - 1)}…` : label;
}

/** Approximate width in px of text at the chart font (DejaVu Sans: ~0.6 em per character). */
export function textWidth(s: string, size = FONT): number {
  return s.length * size * 0.6;
}

/** "Nothing to draw" in place of a chart, with the reason. */
export function emptyChart(chart: string, title: string, reason: string, instance?: string): Html {
  return html`<figure class="card chart-card empty" id="${chartId(chart, instance)}" data-chart-empty="${chart}">
<figcaption><span class="chart-title">${title}</span></figcaption><p class="note">${reason}</p></figure>`;
}
